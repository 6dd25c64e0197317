"""The Gradio page: chat, system prompt, generation settings, Stop / Regenerate / Clear, and a line
about the model. It knows the ChatSource interface only, not where answers come from."""
from __future__ import annotations

import gradio as gr

from lite.model_info import ModelInfo
from lite.web.chat import StopButtons, stream_reply
from lite.web.history import user_message, without_last_answer
from lite.web.settings import GenerationSettings
from lite.web.source import ChatSource

DEFAULT_MAX_TOKENS_LIMIT = 8192  # the slider's end when the server does not say its context length


def describe_model(info: ModelInfo, where: str) -> str:
    """The line under the title: what runs the model, as far as the source knows."""
    facts = [f"**{info.name}**", where]
    if info.backend:
        facts.append(f"backend {info.backend}")
    if info.weight_quantization is not None:
        dtype = f" ({info.dtype})" if info.dtype else ""
        weights = "unquantized" if info.weight_quantization == "none" else info.weight_quantization
        facts.append(f"weights {weights}{dtype}")
    if info.kv_cache_dtype is not None:
        facts.append("KV cache " + (info.kv_cache_dtype if info.kv_cache_dtype != "none" else "unquantized"))
    if info.max_model_len:
        facts.append(f"context {info.max_model_len} tokens")
    if info.backend is None:
        facts.append("backend and quantization not reported by this server")
    return " · ".join(facts)


def build_demo(source: ChatSource, info: ModelInfo, where: str) -> gr.Blocks:
    """`where` says where the model runs, e.g. "in this process" or the API's URL."""
    defaults = GenerationSettings.from_generation_config(info.generation_defaults, info.max_model_len)
    max_tokens_limit = (info.max_model_len - 1) if info.max_model_len else DEFAULT_MAX_TOKENS_LIMIT

    stop_buttons = StopButtons()

    async def respond(history, system_prompt, temperature, top_p, max_tokens, stop_lines,
                      request: gr.Request):
        stop = stop_buttons.arm(request.session_hash)
        try:
            async for new_history, status in stream_reply(source, history, system_prompt,
                                                          (temperature, top_p, max_tokens, stop_lines), stop):
                yield gr.skip() if new_history is None else new_history, status
        finally:
            stop_buttons.disarm(request.session_hash, stop)

    async def press_stop(request: gr.Request):  # async: it sets an asyncio.Event on the event loop
        stop_buttons.press(request.session_hash)

    with gr.Blocks(title=f"lite · {info.name}", analytics_enabled=False) as demo:
        gr.Markdown(f"## lite chat\n{describe_model(info, where)}", elem_id="model-info")
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Chat", elem_id="chat", height=440, buttons=["copy"])
                # Images go in only where the model reads them; the upload button is absent otherwise.
                message_box = gr.MultimodalTextbox(
                    elem_id="message", show_label=False, autofocus=True,
                    sources=["upload"] if info.is_vision else [], file_types=["image"],
                    file_count="multiple",
                    placeholder="Message (Enter sends, Shift+Enter adds a line)" + (
                        "; attach images with the clip" if info.is_vision else ""))
                with gr.Row():
                    stop = gr.Button("Stop", elem_id="stop", variant="stop")
                    regenerate = gr.Button("Regenerate", elem_id="regenerate")
                    clear = gr.Button("Clear", elem_id="clear")
                status = gr.Markdown(elem_id="status")
            with gr.Column(scale=1, min_width=260):
                system_prompt = gr.Textbox(label="System prompt", lines=3, elem_id="system-prompt",
                                           placeholder="e.g. You are a concise assistant.")
                temperature = gr.Slider(0.0, 2.0, value=defaults.temperature, step=0.05,
                                        label="Temperature", info="0 is greedy", elem_id="temperature")
                top_p = gr.Slider(0.05, 1.0, value=defaults.top_p, step=0.05, label="Top-p",
                                  elem_id="top-p")
                max_tokens = gr.Slider(1, max_tokens_limit, value=defaults.max_tokens, step=1,
                                       label="Max tokens", elem_id="max-tokens")
                stop_strings = gr.Textbox(label="Stop strings", info="one per line", lines=2,
                                          elem_id="stop-strings")

        settings = [system_prompt, temperature, top_p, max_tokens, stop_strings]

        def take_message(value: dict, history: list[dict]):
            message = user_message(value.get("text") or "", value.get("files") or [])
            history = history + [message] if message else history
            # The box stays locked until the answer ends, so one chat never runs two answers.
            return gr.MultimodalTextbox(value=None, interactive=False), history

        def unlock():
            return gr.MultimodalTextbox(interactive=True)

        def rewind(history: list[dict]):
            return gr.MultimodalTextbox(interactive=False), without_last_answer(history)

        # Answers run concurrently across visitors: the engine batches them (and lite serve, or
        # whatever serves --api-url, admits them), so Gradio's queue need not serialize them.
        answering = message_box.submit(take_message, [message_box, chatbot], [message_box, chatbot],
                                       queue=False).then(
            respond, [chatbot, *settings], [chatbot, status], concurrency_limit=None)
        answering.then(unlock, None, message_box, queue=False)
        regenerating = regenerate.click(press_stop, queue=False).then(
            rewind, chatbot, [message_box, chatbot], queue=False).then(
            respond, [chatbot, *settings], [chatbot, status], concurrency_limit=None)
        regenerating.then(unlock, None, message_box, queue=False)
        stop.click(press_stop, queue=False)
        clear.click(press_stop, queue=False).then(
            lambda: ([], "", gr.MultimodalTextbox(interactive=True)), None, [chatbot, status, message_box],
            queue=False)
    return demo
