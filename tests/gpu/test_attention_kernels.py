"""KV store, paged decode and prefill attention against lite/backends/reference.py.

Caches hold random values (never zeros) in shuffled blocks; outputs and untouched cache rows
are poisoned with NaN, so an unwritten element or a stray write fails the check.
"""
from __future__ import annotations

import random

import pytest
import torch

pytest.importorskip("triton")

from .gpu_helpers import assert_close, skip_bf16_dot_in_interpreter  # noqa: E402
from lite.backends import BatchLayout, KVCacheSpec, reference  # noqa: E402
from lite.backends.cuda.attention import CUDAAttention  # noqa: E402
from lite.backends.cuda.kernels.decode_attention import decode_attention  # noqa: E402
from lite.backends.cuda.kernels.kv_store import store_kv  # noqa: E402
from lite.backends.cuda.kv_cache import PagedKVCache  # noqa: E402

NUM_SMS = 132


def random_cache(num_blocks, block_size, num_kv_heads, head_dim, dtype, kv_bits, device):
    """A cache full of random rows, quantized by the reference when kv_bits is set."""
    spec = KVCacheSpec(1, num_kv_heads, head_dim, block_size, num_blocks, dtype, kv_bits)
    cache = PagedKVCache.allocate(spec, device)
    rows = (num_blocks, block_size, num_kv_heads, head_dim)
    for name in ("k", "v"):
        values = torch.randn(rows, device=device)
        if kv_bits:
            q, scale, zero = reference.quantize_kv(values, kv_bits)
            getattr(cache, name).copy_(q)
            getattr(cache, f"{name}_scale").copy_(scale)
            getattr(cache, f"{name}_zero").copy_(zero)
        else:
            getattr(cache, name).copy_(values.to(dtype))
    return cache


def float_view(cache: PagedKVCache, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The cache as the reference reads it: [blocks, block_size, kv_heads, head_dim] float32."""
    if not cache.kv_bits:
        return cache.k.float(), cache.v.float()
    return (reference.dequantize_kv(cache.k, cache.k_scale, cache.k_zero, cache.kv_bits, torch.float32),
            reference.dequantize_kv(cache.v, cache.v_scale, cache.v_zero, cache.kv_bits, torch.float32))


def random_tables(context_lens, block_size, num_blocks):
    free = list(range(num_blocks))
    random.Random(len(context_lens)).shuffle(free)  # scattered blocks, as after a while of serving
    return [[free.pop() for _ in range(-(-c // block_size))] for c in context_lens]


@pytest.mark.parametrize("dtype,kv_bits", [(torch.bfloat16, None), (torch.float16, None),
                                           (torch.float32, None), (torch.bfloat16, 8), (torch.bfloat16, 4)])
def test_kv_store_writes_exactly_the_mapped_slots(device, dtype, kv_bits):
    num_kv_heads, head_dim, block_size, num_blocks = 4, 128, 16, 8
    spec = KVCacheSpec(1, num_kv_heads, head_dim, block_size, num_blocks, dtype, kv_bits)
    cache = PagedKVCache.allocate(spec, device)
    if kv_bits:
        for t in (cache.k_scale, cache.k_zero, cache.v_scale, cache.v_zero):
            t.fill_(float("nan"))
    else:
        cache.k.fill_(float("nan"))
        cache.v.fill_(float("nan"))
    tokens = 21
    qkv = torch.randn(tokens, 3 * num_kv_heads * head_dim, device=device).to(dtype)  # strided k, v views
    k = qkv[:, :num_kv_heads * head_dim].view(tokens, num_kv_heads, head_dim)
    v = qkv[:, 2 * num_kv_heads * head_dim:].view(tokens, num_kv_heads, head_dim)
    slots = torch.randperm(num_blocks * block_size, device=device)[:tokens].int()
    slots[3] = -1  # a padded row: must store nothing
    store_kv(k, v, slots, cache)
    written = slots[slots >= 0].long()
    keep = torch.ones(num_blocks * block_size, dtype=torch.bool, device=device)
    keep[written] = False
    k_all, v_all = (t.reshape(-1, num_kv_heads, head_dim) for t in float_view(cache, dtype))
    for new, stored in ((k, k_all), (v, v_all)):
        new = new[slots >= 0].float()
        if kv_bits:  # within one quantization step of the input
            _, scale, _ = reference.quantize_kv(new, kv_bits)
            assert ((stored[written] - new).abs() <= scale.unsqueeze(-1) * 0.5 + 1e-5).all()
        else:
            assert torch.equal(stored[written], new)
        assert stored[keep].isnan().all(), "a slot outside the mapping was written"


@pytest.mark.parametrize("dtype,kv_bits", [(torch.bfloat16, None), (torch.float16, None),
                                           (torch.float32, None), (torch.bfloat16, 8), (torch.bfloat16, 4)])
@pytest.mark.parametrize("heads,kv_heads,head_dim", [(32, 8, 128), (9, 3, 64)])
def test_kv_store_with_rope_rotates_q_and_k_in_place_and_stores_the_rotated_k(device, dtype, kv_bits, heads,
                                                                              kv_heads, head_dim):
    block_size, num_blocks, tokens = 16, 8, 19
    cache = PagedKVCache.allocate(KVCacheSpec(1, kv_heads, head_dim, block_size, num_blocks, dtype, kv_bits), device)
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * head_dim, device=device).to(dtype)
    before = qkv.clone()
    q, k, v = (t.view(tokens, -1, head_dim) for t in qkv.split([heads * head_dim, kv_heads * head_dim,
                                                                   kv_heads * head_dim], dim=-1))
    angles = torch.rand(tokens, head_dim // 2, device=device) * 100
    rope = torch.polar(torch.ones_like(angles), angles)
    slots = torch.randperm(num_blocks * block_size, device=device)[:tokens]
    store_kv(k, v, slots, cache, q=q, rope=rope)
    q_before, k_before, _ = (t.view(tokens, -1, head_dim) for t in before.split(
        [heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1))
    assert_close(q, reference.rotary(q_before.float(), rope), dtype)
    assert_close(k, reference.rotary(k_before.float(), rope), dtype)
    assert torch.equal(v, before[:, (heads + kv_heads) * head_dim:].view(tokens, kv_heads, head_dim))
    k_all, v_all = (t.reshape(-1, kv_heads, head_dim) for t in float_view(cache, dtype))
    for new, stored in ((k, k_all[slots]), (v, v_all[slots])):
        if kv_bits:
            _, scale, _ = reference.quantize_kv(new.float(), kv_bits)
            assert ((stored - new.float()).abs() <= scale.unsqueeze(-1) * 0.5 + 1e-5).all()
        else:
            assert torch.equal(stored, new.float())


ATTENTION_CASES = [(torch.bfloat16, None), (torch.float16, None), (torch.float32, None),
                   (torch.bfloat16, 8), (torch.bfloat16, 4), (torch.float16, 8), (torch.float16, 4)]


def reference_after_store(cache: PagedKVCache, dtype, slots: list[int], k, v):
    """What the kernels must attend over: the cache as stored, except that the step's own new rows
    are seen exactly (for int8/int4 caches, as the CPU backend sees them)."""
    k_ref, v_ref = float_view(cache, dtype)
    index = torch.tensor(slots, device=k_ref.device)
    k_ref.view(-1, *k.shape[1:])[index] = k.float()
    v_ref.view(-1, *v.shape[1:])[index] = v.float()
    return k_ref.cpu(), v_ref.cpu()


@pytest.mark.parametrize("dtype,kv_bits", ATTENTION_CASES)
@pytest.mark.parametrize("heads,kv_heads,head_dim", [(32, 8, 128), (9, 3, 64), (8, 8, 64)])
@pytest.mark.parametrize("num_splits", [1, 7])
def test_paged_decode_attention(device, dtype, kv_bits, heads, kv_heads, head_dim, num_splits):
    skip_bf16_dot_in_interpreter(dtype)
    block_size = 16
    context_lens = [1, 17, 300, 1000]
    num_blocks = sum(-(-c // block_size) for c in context_lens) + 3
    cache = random_cache(num_blocks, block_size, kv_heads, head_dim, dtype, kv_bits, device)
    tables = random_tables(context_lens, block_size, num_blocks)
    width = max(map(len, tables))
    table_tensor = torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32, device=device)
    slots = [t[(c - 1) // block_size] * block_size + (c - 1) % block_size for t, c in zip(tables, context_lens)]
    q = torch.randn(len(context_lens), heads, head_dim, device=device).to(dtype)
    k = torch.randn(len(context_lens), kv_heads, head_dim, device=device).to(dtype)
    v = torch.randn(len(context_lens), kv_heads, head_dim, device=device).to(dtype)
    store_kv(k, v, torch.tensor(slots, dtype=torch.int32, device=device), cache)
    out = torch.full_like(q, float("nan"))
    decode_attention(q, k, v, cache, table_tensor, torch.tensor(context_lens, dtype=torch.int32, device=device),
                     0.125, num_splits, out)
    k_ref, v_ref = reference_after_store(cache, dtype, slots, k, v)
    want = reference.paged_attention(q.float().cpu(), k_ref, v_ref, tables, [1] * len(context_lens),
                                     context_lens, 0.125)
    assert_close(out.cpu(), want, dtype, scale=10 if dtype == torch.float32 else 1)


@pytest.mark.parametrize("dtype,kv_bits", ATTENTION_CASES)
@pytest.mark.parametrize("query_lens,context_lens", [
    ([1, 1, 1], [3, 170, 9]),                # decodes only
    ([7], [7]),                              # a prompt with no cached prefix
    ([200, 3], [333, 3]),                    # a prefix-cache hit / a later chunk, then a short prompt
    ([1, 1, 1, 130, 64], [5, 640, 1, 130, 200]),  # decodes (one a 1-token prompt), then prefills
])
def test_attention_forward_stores_then_attends(device, dtype, kv_bits, query_lens, context_lens):
    skip_bf16_dot_in_interpreter(dtype)
    heads, kv_heads, head_dim, block_size = 8, 2, 128, 16
    num_blocks = sum(-(-c // block_size) for c in context_lens) + 2
    cache = random_cache(num_blocks, block_size, kv_heads, head_dim, dtype, kv_bits, device)
    tables = random_tables(context_lens, block_size, num_blocks)
    slots = [t[p // block_size] * block_size + p % block_size
             for t, q, c in zip(tables, query_lens, context_lens) for p in range(c - q, c)]
    layout = BatchLayout(query_lens, context_lens, tables, slots, block_size)
    tokens = sum(query_lens)
    q = torch.randn(tokens, heads, head_dim, device=device).to(dtype)
    k = torch.randn(tokens, kv_heads, head_dim, device=device).to(dtype)
    v = torch.randn(tokens, kv_heads, head_dim, device=device).to(dtype)
    attention = CUDAAttention(device, NUM_SMS)
    out = attention.forward(q, k, v, cache, attention.build_metadata(layout), 0.1)
    k_ref, v_ref = reference_after_store(cache, dtype, slots, k, v)
    want = reference.paged_attention(q.float().cpu(), k_ref, v_ref, tables, query_lens, context_lens, 0.1)
    assert_close(out.cpu(), want, dtype, scale=10 if dtype == torch.float32 else 1)
    stored_k = float_view(cache, dtype)[0].reshape(-1, kv_heads, head_dim)[torch.tensor(slots, device=device)]
    levels = (1 << kv_bits) - 1 if kv_bits else None
    step = (k.float().amax(-1) - k.float().amin(-1)) / levels if kv_bits else torch.zeros((), device=device)
    assert ((stored_k - k.float()).abs() <= 0.5 * step.unsqueeze(-1) + 1e-5).all(), "the store missed a slot"
