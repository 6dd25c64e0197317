"""Server settings: what `lite serve` flags become, validated on creation."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerConfig:
    served_model_names: tuple[str, ...]  # the first is reported by /v1/models and in responses
    api_keys: tuple[str, ...] = ()  # empty: no authentication
    # Sequences that may wait for a decode slot beyond the engine's max_num_seqs; past that a
    # request is refused with 503 and Retry-After, so memory and latency stay bounded.
    max_queued_seqs: int = 256
    retry_after_s: int = 1
    max_request_bytes: int = 4 << 20
    cors_origins: tuple[str, ...] = ()
    log_requests: bool = False
    shutdown_timeout_s: float = 30.0  # grace period for requests in flight on SIGTERM

    def __post_init__(self):
        if not self.served_model_names or any(not name for name in self.served_model_names):
            raise ValueError("served_model_names needs at least one non-empty name")
        if self.max_queued_seqs < 0:
            raise ValueError(f"max_queued_seqs must be >= 0, got {self.max_queued_seqs}")
        if self.retry_after_s < 1:
            raise ValueError(f"retry_after_s must be >= 1, got {self.retry_after_s}")
        if self.max_request_bytes < 1024:
            raise ValueError(f"max_request_bytes must be >= 1024, got {self.max_request_bytes}")
        if self.shutdown_timeout_s < 0:
            raise ValueError(f"shutdown_timeout_s must be >= 0, got {self.shutdown_timeout_s}")
