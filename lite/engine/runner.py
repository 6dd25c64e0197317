"""The only place sequences become tensors: positions, slot mapping, block tables, then the model."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
from torch import nn

from lite.backends.base import Backend, BatchLayout, ForwardContext
from lite.engine.sampler import Draws, SampleResult, Sampler
from lite.engine.sequence import UNRESOLVED, Sequence


@dataclass
class LaunchedStep:
    """A step whose work is queued on the device; its samples reach the host on `samples()`."""
    num_seqs: int
    sampled: list[int]  # index in the step's seqs of each row that samples, in draw order
    draws: Draws | None
    wait: Callable[[], dict[str, torch.Tensor]] | None

    def samples(self) -> list[SampleResult | None]:
        """A sample for each sequence whose step reached its last token, None for the others;
        waits for this step's draws (not for steps launched after it)."""
        results: list[SampleResult | None] = [None] * self.num_seqs
        if self.draws is not None:
            for i, result in zip(self.sampled, replace(self.draws, **self.wait()).results()):
                results[i] = result
        return results


class ModelRunner:
    def __init__(self, model: nn.Module, backend: Backend, kv_caches: list, block_size: int, seed: int = 0):
        self.model = model
        self.backend = backend
        self.attention = backend.attention()
        self.kv_caches = kv_caches
        self.block_size = block_size
        self.sampler = Sampler(seed)
        self.graph_runner = None
        # The last launched step's draws, still on the device: the next step reads its input
        # tokens from there when it is launched before they reach the host.
        self._last_draws: torch.Tensor | None = None
        self._last_draw_index: dict[int, int] = {}  # seq_id -> row of _last_draws

    def capture_graphs(self, max_num_seqs: int, max_model_len: int) -> None:
        """Let the backend capture decode steps (CUDA graphs, ...); backends without graphs decline."""
        self.graph_runner = self.backend.graph_runner(self.model, self.kv_caches, max_num_seqs,
                                                      max_model_len, self.block_size)

    @torch.inference_mode()
    def launch(self, seqs: list[Sequence], num_new_tokens: list[int]) -> LaunchedStep:
        """Queue the computation of `num_new_tokens[i]` tokens of each sequence from its
        num_computed_tokens on, and the sampling of those whose step reaches their last token.
        A sequence's input token may still be UNRESOLVED: the previous step's draw, on the device."""
        # Decodes (one query token) first: the attention backends batch them as one block.
        order = sorted(range(len(seqs)), key=lambda i: num_new_tokens[i] != 1)
        token_ids, positions, slots, embeds = [], [], [], []
        layout = BatchLayout([], [], [], [], self.block_size)
        sample_rows, sampled = [], []  # row in the flat batch, index in seqs
        drawn_rows, drawn_from = [], []  # rows whose token is the last step's draw, and its row there
        bs = self.block_size
        for i in order:
            seq, n = seqs[i], num_new_tokens[i]
            start, end = seq.num_computed_tokens, seq.num_computed_tokens + n
            token_ids.extend(seq.token_ids[start:end])
            if token_ids[-1] == UNRESOLVED:
                drawn_rows.append(len(token_ids) - 1)
                drawn_from.append(self._draw_row(seq, n))
                token_ids[-1] = 0
            positions.extend(range(start, end))
            slots.extend(seq.block_ids[p // bs] * bs + p % bs for p in range(start, end))
            layout.query_lens.append(n)
            layout.context_lens.append(end)
            layout.block_tables.append(seq.block_ids)
            if seq.prompt_embeds is not None and start < seq.num_prompt_tokens:
                embeds.append((len(token_ids) - n, seq.prompt_embeds[start:min(end, seq.num_prompt_tokens)]))
            if end == seq.num_tokens:
                sample_rows.append(len(token_ids) - 1)
                sampled.append(i)
        layout.slot_mapping = slots
        device_token_ids = None
        if drawn_rows:
            rows, draw_rows = self.backend.upload(np.array([drawn_rows, drawn_from], dtype=np.int64))
            device_token_ids = (rows, self._last_draws.index_select(0, draw_rows))
        hidden = self._forward(token_ids, positions, layout, embeds, device_token_ids)
        if not sampled:
            return LaunchedStep(len(seqs), [], None, None)
        # Rows are distinct and increasing: as many as the batch has means all of them.
        if len(sample_rows) != hidden.shape[0]:
            hidden = hidden.index_select(0, self.backend.upload(np.array(sample_rows, dtype=np.int64)))
        logits = self.model.compute_logits(hidden).float()
        draws = self.sampler(logits, [seqs[i] for i in sampled])
        self._last_draws = draws.token_ids
        self._last_draw_index = {seqs[i].seq_id: row for row, i in enumerate(sampled)}
        return LaunchedStep(len(seqs), sampled, draws, self.backend.download(draws.tensors()))

    def _draw_row(self, seq: Sequence, num_new_tokens: int) -> int:
        row = self._last_draw_index.get(seq.seq_id)
        if num_new_tokens != 1 or row is None:
            raise RuntimeError(f"request {seq.request_id}: its input token is not sampled yet and the last "
                               "step did not draw it (a scheduling bug: report it)")
        return row

    def _forward(self, token_ids: list[int], positions: list[int], layout: BatchLayout,
                 embeds: list[tuple[int, torch.Tensor]],
                 device_token_ids: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        if not embeds and self.graph_runner is not None and self.graph_runner.can_replay(layout):
            return self.graph_runner.replay(token_ids, positions, layout, device_token_ids)
        ids, pos = self.backend.upload(np.array([token_ids, positions], dtype=np.int64))
        if device_token_ids is not None:
            ids.index_copy_(0, *device_token_ids)
        input_embeds = None
        if embeds:  # (first row, [rows, hidden]) spans that replace the token embeddings
            input_embeds = self.model.embed(ids)
            for row, rows in embeds:
                input_embeds[row:row + len(rows)] = rows.to(input_embeds)
        ctx = ForwardContext(self.attention, self.attention.build_metadata(layout), self.kv_caches)
        return self.model(ids, pos, ctx, input_embeds=input_embeds)
