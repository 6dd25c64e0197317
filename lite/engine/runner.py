"""The only place sequences become tensors: positions, slot mapping, block tables, then the model."""
from __future__ import annotations

import torch
from torch import nn

from lite.backends.base import Backend, BatchLayout, ForwardContext
from lite.engine.sampler import SampleResult, Sampler
from lite.engine.sequence import Sequence


class ModelRunner:
    def __init__(self, model: nn.Module, backend: Backend, kv_caches: list, block_size: int, seed: int = 0):
        self.model = model
        self.backend = backend
        self.attention = backend.attention()
        self.kv_caches = kv_caches
        self.block_size = block_size
        self.sampler = Sampler(seed)
        self.graph_runner = None

    def capture_graphs(self, max_num_seqs: int, max_model_len: int) -> None:
        """Let the backend capture decode steps (CUDA graphs, ...); backends without graphs decline."""
        self.graph_runner = self.backend.graph_runner(self.model, self.kv_caches, max_num_seqs,
                                                      max_model_len, self.block_size)

    @torch.inference_mode()
    def execute(self, seqs: list[Sequence], num_new_tokens: list[int]) -> list[SampleResult | None]:
        """Compute `num_new_tokens[i]` tokens of each sequence from its num_computed_tokens on;
        returns a sample for each sequence whose step reaches its last token, None for the others."""
        # Decodes (one query token) first: the attention backends batch them as one block.
        order = sorted(range(len(seqs)), key=lambda i: num_new_tokens[i] != 1)
        token_ids, positions, slots, embeds = [], [], [], []
        layout = BatchLayout([], [], [], [], self.block_size)
        sample_rows, sampled = [], []  # row in the flat batch, index in seqs
        bs = self.block_size
        for i in order:
            seq, n = seqs[i], num_new_tokens[i]
            start, end = seq.num_computed_tokens, seq.num_computed_tokens + n
            token_ids.extend(seq.token_ids[start:end])
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
        hidden = self._forward(token_ids, positions, layout, embeds)
        results: list[SampleResult | None] = [None] * len(seqs)
        if sampled:
            # Rows are distinct and increasing: as many as the batch has means all of them.
            rows = hidden if len(sample_rows) == hidden.shape[0] else hidden[sample_rows]
            logits = self.model.compute_logits(rows).float()
            for i, result in zip(sampled, self.sampler(logits, [seqs[i] for i in sampled])):
                results[i] = result
        return results

    def _forward(self, token_ids: list[int], positions: list[int], layout: BatchLayout,
                 embeds: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
        if not embeds and self.graph_runner is not None and self.graph_runner.can_replay(layout):
            return self.graph_runner.replay(token_ids, positions, layout)
        device = self.backend.device
        ids = torch.tensor(token_ids, dtype=torch.long, device=device)
        pos = torch.tensor(positions, dtype=torch.long, device=device)
        input_embeds = None
        if embeds:  # (first row, [rows, hidden]) spans that replace the token embeddings
            input_embeds = self.model.embed(ids)
            for row, rows in embeds:
                input_embeds[row:row + len(rows)] = rows.to(input_embeds)
        ctx = ForwardContext(self.attention, self.attention.build_metadata(layout), self.kv_caches)
        return self.model(ids, pos, ctx, input_embeds=input_embeds)
