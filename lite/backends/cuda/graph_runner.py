"""CUDA graphs of decode steps, one per bucketed batch size.

A decode step launches ~10 kernels per layer; at small batches their launch gaps, not the GPU,
would set the pace. Each bucket's forward pass is captured once at start; a step of n decodes
replays the smallest bucket >= n. The padded rows store nothing (slot -1) and attend one token
of block 0 (finite, since the cache is zero-filled), and their outputs are dropped.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import torch

from lite.backends.base import BatchLayout, ForwardContext, GraphRunner
from lite.backends.cuda.attention import CUDAAttention, CUDAAttentionMetadata, DecodeBatch

logger = logging.getLogger("lite.backends")


def decode_buckets(max_num_seqs: int) -> list[int]:
    """1, 2, 4, 8, then multiples of 16: up to the first size that holds max_num_seqs."""
    sizes = [1, 2, 4, 8, *range(16, max_num_seqs + 16, 16)]
    return [s for s in sizes if s < max_num_seqs] + [next(s for s in sizes if s >= max_num_seqs)]


class CUDAGraphRunner(GraphRunner):
    def __init__(self, model, attention: CUDAAttention, kv_caches: list, max_num_seqs: int,
                 max_model_len: int, block_size: int):
        self.model, self.attention, self.kv_caches = model, attention, kv_caches
        self.buckets = decode_buckets(max_num_seqs)
        self.max_model_len = max_model_len
        rows = self.buckets[-1]
        self.width = -(-max_model_len // block_size)
        # All inputs live in one int64 buffer, [token ids | positions | slots | context lens |
        # block tables], so a step fills them with one host-to-device copy; `host` mirrors it.
        self.host = np.zeros(rows * (4 + self.width), dtype=np.int64)
        self.host_ids, self.host_positions, self.host_slots, self.host_lens = self.host[:4 * rows].reshape(4, rows)
        self.host_tables = self.host[4 * rows:].reshape(rows, self.width)
        self.host_slots[:], self.host_lens[:] = -1, 1
        self.static = torch.from_numpy(self.host).to(attention.device)
        self.input_ids, self.positions, self.slots, self.context_lens = self.static[:4 * rows].view(4, rows)
        self.tables = self.static[4 * rows:].view(rows, self.width)
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._capture_all()

    def _context(self, rows: int) -> ForwardContext:
        decode = DecodeBatch(self.tables[:rows], self.context_lens[:rows], self.max_model_len)
        metadata = CUDAAttentionMetadata(self.slots[:rows], rows, decode, None)
        return ForwardContext(self.attention, metadata, self.kv_caches)

    @torch.inference_mode()
    def _capture_all(self) -> None:
        start = time.perf_counter()
        pool = torch.cuda.graph_pool_handle()  # shared: one bucket runs at a time
        for rows in reversed(self.buckets):  # largest first, so smaller ones fit in its memory
            ctx = self._context(rows)
            # Run once uncaptured: Triton compiles and cuBLAS picks its kernels outside the capture.
            self.model(self.input_ids[:rows], self.positions[:rows], ctx)
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                hidden = self.model(self.input_ids[:rows], self.positions[:rows], ctx)
            self.graphs[rows] = (graph, hidden)
        torch.cuda.synchronize()
        logger.info("captured %d decode graphs (batch sizes %s) in %.1fs", len(self.buckets),
                    ",".join(map(str, self.buckets)), time.perf_counter() - start)

    def can_replay(self, layout: BatchLayout) -> bool:
        n = len(layout.query_lens)
        return 0 < n <= self.buckets[-1] and layout.num_decodes == n

    def replay(self, token_ids: list[int], positions: list[int], layout: BatchLayout,
               device_token_ids: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        n = len(token_ids)
        rows = next(b for b in self.buckets if b >= n)
        # Padded rows keep their last token ids and positions (valid ones), store nothing and
        # attend one position of block 0.
        self.host_ids[:n], self.host_positions[:n] = token_ids, positions
        self.host_slots[:n], self.host_slots[n:rows] = layout.slot_mapping, -1
        self.host_lens[:n], self.host_lens[n:rows] = layout.context_lens, 1
        self.host_tables[:rows] = 0
        for row, table in enumerate(layout.block_tables):
            used = table[:self.width]
            self.host_tables[row, :len(used)] = used
        # A fresh pinned copy each step: the previous step's copy may not have run yet.
        self.static.copy_(torch.from_numpy(self.host).pin_memory(), non_blocking=True)
        if device_token_ids is not None:
            self.input_ids.index_copy_(0, *device_token_ids)
        graph, hidden = self.graphs[rows]
        graph.replay()
        return hidden[:n]
