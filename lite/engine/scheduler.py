"""Continuous batching: which sequences compute how many tokens in the next step.

Each step has a token budget. Running sequences come first (a decode costs one token, a
sequence mid-prefill continues with its next chunk), then waiting ones are admitted in FIFO
order. When blocks run out the most recently admitted running sequence is preempted: its
blocks are freed and it is recomputed later (its prefix may still be in the prefix cache).
No tensors here.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from lite.config import SchedulerConfig
from lite.engine.block_manager import BlockManager
from lite.engine.sequence import UNRESOLVED, FinishReason, Sequence, SequenceStatus


@dataclass
class ScheduledBatch:
    seqs: list[Sequence] = field(default_factory=list)
    # Tokens to compute this step for each of `seqs`, starting at seq.num_computed_tokens.
    num_new_tokens: list[int] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    # Set by Scheduler.advance: where each sequence's sampled token goes in its token_ids, or None.
    draw_index: list[int | None] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new_tokens)

    @property
    def is_empty(self) -> bool:
        return not self.seqs

    def add(self, seq: Sequence, num_new_tokens: int) -> None:
        self.seqs.append(seq)
        self.num_new_tokens.append(num_new_tokens)


class Scheduler:

    def __init__(self, config: SchedulerConfig, block_manager: BlockManager):
        self.config = config
        self.block_manager = block_manager
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # in admission order: the last one is preempted first
        self.num_preemptions = 0

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        # A longer prompt could never be scheduled and would block the FIFO queue for good.
        if seq.num_tokens > self.config.max_model_len:
            raise ValueError(f"request {seq.request_id} has {seq.num_tokens} tokens, more than "
                             f"max_model_len ({self.config.max_model_len})")
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    def abort(self, request_id: str) -> Sequence | None:
        for seq in (*self.running, *self.waiting):
            if seq.request_id == request_id:
                self._retire(seq, FinishReason.ABORT)
                return seq
        return None

    def finish(self, seq: Sequence, reason: FinishReason) -> None:
        self._retire(seq, reason)

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self._schedule_running(batch)
        # Right after a preemption blocks are short: admitting now would only thrash.
        if not batch.preempted:
            self._admit_waiting(batch, budget)
        return batch

    def advance(self, batch: ScheduledBatch, samples: list[bool]) -> None:
        """Record a launched step: its tokens count as computed (their KV is written before any
        later step reads it), and each sequence that samples holds an UNRESOLVED token until
        `resolve` fills it in."""
        batch.draw_index = [None] * len(batch.seqs)
        for i, (seq, num_new_tokens, draws) in enumerate(zip(batch.seqs, batch.num_new_tokens, samples,
                                                             strict=True)):
            if seq.is_finished:  # aborted while the step was built
                continue
            seq.num_computed_tokens += num_new_tokens
            if draws:
                if seq.num_computed_tokens != seq.num_tokens:
                    raise ValueError(
                        f"request {seq.request_id} sampled a token before its prompt was computed")
                batch.draw_index[i] = seq.num_tokens
                seq.append_token(UNRESOLVED)

    def resolve(self, batch: ScheduledBatch, sampled_token_ids: list[int | None]) -> None:
        """The step's sampled tokens reached the host: fill them in and share the full blocks."""
        for seq, index, token_id in zip(batch.seqs, batch.draw_index, sampled_token_ids, strict=True):
            if seq.is_finished:  # finished or aborted while the step ran
                continue
            if index is not None:
                seq.token_ids[index] = token_id
            # A sequence preempted meanwhile has no blocks to share; it recomputes them later.
            if seq.status is SequenceStatus.RUNNING:
                self.block_manager.cache_full_blocks(seq)

    def _schedule_running(self, batch: ScheduledBatch) -> int:
        budget = self.config.max_num_batched_tokens
        index = 0
        while index < len(self.running) and budget > 0:
            seq = self.running[index]
            if self._at_length_limit(seq):  # its last token is in flight: nothing left to compute
                index += 1
                continue
            num_new_tokens = self._num_new_tokens(seq, seq.num_computed_tokens, budget)
            if num_new_tokens == 0:
                index += 1
                continue
            if not self._allocate_or_preempt(seq, num_new_tokens, batch):
                break  # seq preempted itself: everything behind it is already gone
            batch.add(seq, num_new_tokens)
            budget -= num_new_tokens
            index += 1
        return budget

    def _allocate_or_preempt(self, seq: Sequence, num_new_tokens: int, batch: ScheduledBatch) -> bool:
        """Preempt from the back of `running` until `seq` gets its blocks; False if `seq` went too."""
        while not self.block_manager.allocate_slots(seq, num_new_tokens):
            victim = self.running[-1]
            if victim is seq and len(self.running) == 1:
                raise RuntimeError(
                    f"request {seq.request_id} alone needs more KV blocks than the cache holds "
                    f"({self.block_manager.num_blocks} blocks of {self.block_manager.block_size} "
                    f"tokens for {seq.num_computed_tokens + num_new_tokens} tokens): the KV cache "
                    f"must hold at least max_model_len ({self.config.max_model_len}) tokens")
            self._preempt(self.running.pop())
            batch.preempted.append(victim)
            if victim is seq:
                return False
        return True

    def _admit_waiting(self, batch: ScheduledBatch, budget: int) -> None:
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting[0]
            prefix_block_ids, num_cached_tokens = self.block_manager.get_computed_prefix(seq)
            num_new_tokens = self._num_new_tokens(seq, num_cached_tokens, budget)
            if num_new_tokens == 0:
                break
            if not self.block_manager.allocate_slots(seq, num_new_tokens, prefix_block_ids):
                if not self.running:  # every block is free and it still does not fit
                    raise RuntimeError(
                        f"request {seq.request_id} needs more KV blocks than the cache holds "
                        f"({self.block_manager.num_blocks} blocks of {self.block_manager.block_size} "
                        f"tokens for {num_cached_tokens + num_new_tokens} tokens)")
                break  # FIFO: nobody overtakes the head of the queue
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            batch.add(seq, num_new_tokens)
            budget -= num_new_tokens

    def _at_length_limit(self, seq: Sequence) -> bool:
        return (seq.num_output_tokens >= seq.sampling_params.max_tokens
                or seq.num_tokens >= self.config.max_model_len)

    def _num_new_tokens(self, seq: Sequence, num_computed_tokens: int, budget: int) -> int:
        """Tokens `seq` computes this step within `budget`; 0 when it must wait."""
        num_uncomputed_tokens = seq.num_tokens - num_computed_tokens
        if self.config.enable_chunked_prefill:
            return min(num_uncomputed_tokens, budget)
        return num_uncomputed_tokens if num_uncomputed_tokens <= budget else 0

    def _preempt(self, seq: Sequence) -> None:
        self.block_manager.free(seq)
        seq.num_computed_tokens = 0
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def _retire(self, seq: Sequence, reason: FinishReason) -> None:
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.block_manager.free(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
