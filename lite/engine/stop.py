"""Stop strings: generation ends as soon as one is complete, the output is cut exactly before the
earliest one in the text by then, and no part of one is ever streamed."""
from __future__ import annotations

from collections.abc import Sequence


def find_stop(text: str, stop_strings: Sequence[str], start: int = 0) -> tuple[int, str] | None:
    """(index, stop string) of the stop string that begins first in text[start:], or None."""
    matches = [(index, stop) for stop in stop_strings if stop and (index := text.find(stop, start)) >= 0]
    return min(matches, key=lambda match: match[0]) if matches else None


def partial_stop_length(text: str, stop_strings: Sequence[str]) -> int:
    """Length of the longest tail of text that is the beginning of some stop string (so may become one)."""
    longest = max((len(stop) for stop in stop_strings), default=0)
    for length in range(min(longest - 1, len(text)), 0, -1):
        tail = text[-length:]
        if any(stop.startswith(tail) for stop in stop_strings):
            return length
    return 0


class StopChecker:
    """Per sequence: takes newly decoded text, returns the part that is safe to stream.

    Text that could be the start of a stop string is held back until it either completes the stop
    string (then it is dropped and the sequence is stopped) or stops matching (then it is released).
    """

    def __init__(self, stop_strings: Sequence[str]):
        self.stop_strings = tuple(stop for stop in stop_strings if stop)
        self._max_stop_length = max((len(stop) for stop in self.stop_strings), default=0)
        self.text = ""  # all output text so far, cut before the stop string once one is found
        self.matched_stop: str | None = None
        self._num_streamed_chars = 0

    @property
    def is_stopped(self) -> bool:
        return self.matched_stop is not None

    def feed(self, new_text: str) -> str:
        if self.is_stopped:
            return ""
        # Earlier text held no stop string, so a new one must end inside new_text.
        search_start = max(0, len(self.text) - self._max_stop_length + 1)
        self.text += new_text
        match = find_stop(self.text, self.stop_strings, search_start)
        if match is not None:
            index, self.matched_stop = match
            self.text = self.text[:index]
            return self._stream_up_to(len(self.text))
        return self._stream_up_to(len(self.text) - partial_stop_length(self.text, self.stop_strings))

    def flush(self) -> str:
        """The held-back tail, once the sequence has ended for another reason (EOS, max_tokens)."""
        return self._stream_up_to(len(self.text))

    def _stream_up_to(self, end: int) -> str:
        chunk = self.text[self._num_streamed_chars:end]
        self._num_streamed_chars = max(self._num_streamed_chars, end)
        return chunk
