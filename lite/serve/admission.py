"""Admission control: a bounded number of sequences in flight, the rest refused with Retry-After.

The engine's waiting queue would otherwise grow without bound under overload, and every queued
request would only time out later. Counting happens on the event loop, so it needs no lock.
"""
from __future__ import annotations

from lite.serve.errors import APIError


class Admission:
    """Slots held by one request; released once, when its response is done (or never started)."""

    def __init__(self, gate: AdmissionGate, num_seqs: int):
        self._gate, self.num_seqs = gate, num_seqs

    def release(self) -> None:
        if self._gate is not None:
            self._gate.num_admitted_seqs -= self.num_seqs
            self._gate = None


class AdmissionGate:
    def __init__(self, max_running_seqs: int, max_queued_seqs: int, retry_after_s: int):
        self.capacity = max_running_seqs + max_queued_seqs
        self.retry_after_s = retry_after_s
        self.num_admitted_seqs = 0
        self.num_refused = 0

    def acquire(self, num_seqs: int) -> Admission:
        """Slots for `num_seqs` sequences, or 503 with Retry-After when they are not free."""
        if num_seqs > self.capacity:
            raise APIError(400, f"the request asks for {num_seqs} sequences but the server runs at "
                                f"most {self.capacity} at once; lower n", param="n")
        if self.num_admitted_seqs + num_seqs > self.capacity:
            self.num_refused += 1
            raise APIError(503, f"the server is at capacity ({self.num_admitted_seqs} sequences in "
                                f"flight, {self.capacity} allowed); retry after {self.retry_after_s}s",
                           code="server_overloaded", headers={"Retry-After": str(self.retry_after_s)})
        self.num_admitted_seqs += num_seqs
        return Admission(self, num_seqs)
