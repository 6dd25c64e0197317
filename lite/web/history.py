"""The chat as Gradio's Chatbot holds it <-> the OpenAI chat messages that sources take.

A Chatbot message is {"role", "content"}; Gradio hands content back as a list of parts:
{"type": "text", "text"} and {"type": "file", "file": {"path", "mime_type"}}, while what the demo
itself puts in is a string or a list of strings and {"path"} dicts. Images become OpenAI
`image_url` parts with a data: URL, which lite serve and other servers accept alike.
"""
from __future__ import annotations

import base64
import mimetypes
from pathlib import Path


def user_message(text: str, image_paths: list[str]) -> dict | None:
    """The Chatbot entry for what the person typed and attached; None when there is nothing."""
    text = text.strip()
    if not image_paths:
        return {"role": "user", "content": text} if text else None
    return {"role": "user", "content": [{"path": path} for path in image_paths] + ([text] if text else [])}


def to_openai_messages(history: list[dict], system_prompt: str = "") -> list[dict]:
    messages = [{"role": "system", "content": system_prompt.strip()}] if system_prompt.strip() else []
    for entry in history:
        texts, images = _split_content(entry["content"])
        if entry["role"] == "user" and images:
            parts = [{"type": "image_url", "image_url": {"url": _data_url(path)}} for path in images]
            messages.append({"role": "user", "content": parts + [{"type": "text", "text": t} for t in texts]})
        elif texts:
            messages.append({"role": entry["role"], "content": "\n".join(texts)})
    return messages


def has_images(messages: list[dict]) -> bool:
    return any(isinstance(m["content"], list) and any(p.get("type") == "image_url" for p in m["content"])
               for m in messages)


def without_last_answer(history: list[dict]) -> list[dict]:
    """The chat up to and including its last user message: what Regenerate answers again."""
    end = len(history)
    while end and history[end - 1]["role"] != "user":
        end -= 1
    return history[:end]


def _split_content(content) -> tuple[list[str], list[str]]:
    """(texts, image paths) of one message's content, in whichever form Gradio holds it."""
    texts, images = [], []
    for part in content if isinstance(content, list) else [content]:
        if isinstance(part, str):
            texts.append(part)
        elif part.get("type") == "text":
            texts.append(part["text"])
        elif "path" in part or part.get("type") == "file":
            file = part.get("file", part)
            if _is_image(file):
                images.append(file["path"])
    return [t for t in texts if t], images


def _is_image(file: dict) -> bool:
    mime_type = file.get("mime_type") or mimetypes.guess_type(file["path"])[0] or ""
    return mime_type.startswith("image/")


def _data_url(path: str) -> str:
    mime_type = mimetypes.guess_type(path)[0] or "image/png"
    return f"data:{mime_type};base64,{base64.b64encode(Path(path).read_bytes()).decode()}"
