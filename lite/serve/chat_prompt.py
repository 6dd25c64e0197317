"""OpenAI chat messages (and tools) -> prompt token ids through the model's chat template.

Templates written without tools (SmolLM2's, many others) would silently drop them, so for those
the tools are described in a system message in the Hermes convention, and earlier tool calls and
results are written into the messages the same way; the tool-call parser reads that format back.
"""
from __future__ import annotations

import json

from lite.serve.errors import APIError
from lite.serve.protocol import ChatMessage, ChatTool

# The tool instructions Qwen2.5 and Hermes models are trained on.
TOOLS_SYSTEM_PROMPT = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""


def _text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part.text for part in content)


def _arguments(arguments: str):
    # Templates expect a mapping (`arguments | tojson`); keep text that is not JSON as it is.
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def _message_dict(message: ChatMessage, template_knows_tools: bool) -> dict:
    role = "system" if message.role == "developer" else message.role
    result = {"role": role, "content": _text(message.content)}
    if message.name:
        result["name"] = message.name
    if message.tool_call_id:
        result["tool_call_id"] = message.tool_call_id
    calls = [{"name": call.function.name, "arguments": _arguments(call.function.arguments)}
             for call in message.tool_calls or ()]
    if template_knows_tools:
        if calls:
            result["tool_calls"] = [{"id": call.id, "type": "function", "function": fields}
                                    for call, fields in zip(message.tool_calls, calls)]
    elif calls:
        written = "\n".join(f"<tool_call>\n{json.dumps(c)}\n</tool_call>" for c in calls)
        result["content"] = f"{result['content']}\n{written}".lstrip("\n")
    elif role == "tool":
        result["content"] = f"<tool_response>\n{result['content']}\n</tool_response>"
    return result


def render_chat_prompt(tokenizer, messages: list[ChatMessage], tools: list[ChatTool] | None) -> list[int]:
    template = tokenizer.hf_tokenizer.chat_template or ""
    template_knows_tools = "tools" in template
    dicts = [_message_dict(m, template_knows_tools) for m in messages]
    tool_dicts = [tool.model_dump(exclude_none=True) for tool in tools] if tools else None
    if tool_dicts and not template_knows_tools:
        described = TOOLS_SYSTEM_PROMPT.format(tools="\n".join(json.dumps(t) for t in tool_dicts))
        if dicts[0]["role"] == "system":
            dicts[0] = {**dicts[0], "content": f"{dicts[0]['content']}\n\n{described}".lstrip()}
        else:
            dicts.insert(0, {"role": "system", "content": described})
        tool_dicts = None
    try:
        return tokenizer.apply_chat_template(dicts, tools=tool_dicts)
    except ValueError as exc:  # no chat template at all
        raise APIError(400, str(exc), param="messages") from exc
    except Exception as exc:  # the template rejected these messages (raise_exception, bad roles...)
        raise APIError(400, f"the chat template cannot render these messages: {exc}",
                       param="messages") from exc
