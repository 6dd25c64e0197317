"""Errors the chat shows as a sentence a person can act on, never as a stack trace."""
from __future__ import annotations


class ChatError(RuntimeError):
    """Its message is shown in the UI as it is (and by the CLI, as any RuntimeError, at start-up)."""


def context_too_long(detail: str) -> ChatError:
    return ChatError(f"The conversation is too long for the model's context ({detail}). Clear the chat "
                     "or send a shorter message.")


def unreachable(url: str, reason: str) -> ChatError:
    return ChatError(f"Cannot reach the server at {url} ({reason}). Is it running?")


def http_error(url: str, status: int, body: dict | str) -> ChatError:
    """An OpenAI-style error answer ({"error": {"message", "code"}}) or any other body."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    message = error.get("message") or (body if isinstance(body, str) else "") or "no details"
    message = str(message).strip()[:500]
    if error.get("code") == "context_length_exceeded" or "context length" in message.lower():
        return context_too_long(message)
    if status == 401:
        return ChatError(f"The server at {url} needs an API key: start lite gradio with --api-key KEY "
                         f"(it said: {message})")
    if status == 404:
        return ChatError(f"The server at {url} has no such model or route (404: {message}). Check "
                         "--api-url (it usually ends in /v1) and --api-model.")
    if status in (429, 503):
        return ChatError(f"The server at {url} is busy ({status}): try again in a moment. ({message})")
    return ChatError(f"The server at {url} refused the request ({status}): {message}")


def failed_while_answering(url: str, event: dict) -> ChatError:
    """An error event inside a stream that had begun well: the status line was already sent."""
    error = event.get("error") if isinstance(event.get("error"), dict) else {}
    return ChatError(f"The server at {url} failed while answering: {error.get('message') or event}")
