"""int8/int4 KV cache: the reference quantize/dequantize ops and the CPU backend's quantized cache."""
import pytest
import torch

from lite.backends import reference
from lite.backends.base import BatchLayout, KVCacheSpec
from lite.backends.cpu.backend import CPUBackend
from lite.backends.cpu.kv_quant import QuantizedKVCache


@pytest.mark.parametrize("bits", [8, 4])
def test_kv_round_trip_is_within_half_a_step_per_token_and_head(bits):
    x = torch.randn(11, 3, 64) * torch.linspace(0.1, 10, 64)  # channels of very different size
    q, scale, zero = reference.quantize_kv(x, bits)
    assert q.dtype == torch.uint8 and q.shape == (11, 3, 64 * bits // 8)
    assert scale.shape == zero.shape == (11, 3)
    restored = reference.dequantize_kv(q, scale, zero, bits, torch.float32)
    assert ((restored - x).abs() <= scale.unsqueeze(-1) * 0.5 + 1e-5).all()
    assert torch.allclose(restored.amin(-1), x.amin(-1), atol=1e-5)  # the row minimum is exact


def test_int4_kv_keeps_two_values_per_byte_low_nibble_first():
    x = torch.tensor([[[0.0, 15.0, 3.0, 7.0]]])  # min 0, step 1: q == x
    q, _, _ = reference.quantize_kv(x, 4)
    assert q.tolist() == [[[0 | 15 << 4, 3 | 7 << 4]]]


def test_constant_rows_survive_quantization():
    x = torch.full((2, 1, 8), 0.25)
    q, scale, zero = reference.quantize_kv(x, 8)
    assert torch.equal(reference.dequantize_kv(q, scale, zero, 8, torch.float32), x)


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_cache_stores_and_gathers_what_the_reference_dequantizes(bits):
    spec = KVCacheSpec(num_layers=1, num_kv_heads=2, head_dim=16, block_size=4, num_blocks=5,
                       dtype=torch.float32, kv_bits=bits)
    cache = QuantizedKVCache.allocate(spec)
    k, v = torch.randn(6, 2, 16), torch.randn(6, 2, 16)
    slots = torch.tensor([8, 9, 10, 11, 1, 2])  # block 2 whole, two slots of block 0
    cache.store(slots, k, v)
    keys, values = cache.gather(torch.tensor([2, 0]), torch.float32)  # [2 blocks, 4, heads, dim]
    flat_k, flat_v = keys.flatten(0, 1), values.flatten(0, 1)
    for row, slot in zip(range(6), [0, 1, 2, 3, 5, 6]):
        expected_k = reference.dequantize_kv(*reference.quantize_kv(k[row:row + 1], bits), bits, torch.float32)
        expected_v = reference.dequantize_kv(*reference.quantize_kv(v[row:row + 1], bits), bits, torch.float32)
        torch.testing.assert_close(flat_k[slot], expected_k[0])
        torch.testing.assert_close(flat_v[slot], expected_v[0])


def test_kv_bytes_per_block_counts_integers_and_scales():
    spec = KVCacheSpec(num_layers=30, num_kv_heads=3, head_dim=64, block_size=16, num_blocks=1,
                       dtype=torch.float32)
    fp32 = CPUBackend.kv_bytes_per_block(spec)
    spec.kv_bits = 8
    int8 = CPUBackend.kv_bytes_per_block(spec)
    spec.kv_bits = 4
    int4 = CPUBackend.kv_bytes_per_block(spec)
    assert fp32 == 2 * 30 * 16 * 3 * 64 * 4
    assert int8 == 2 * 30 * 16 * 3 * (64 + 8) and int4 == 2 * 30 * 16 * 3 * (32 + 8)


def attend_over_a_quantized_cache(bits, history, query_lens, tables):
    """(attention output, the reference's over the dequantized cache with the new tokens exact)."""
    torch.manual_seed(0)
    backend = CPUBackend()
    heads, kv_heads, dim, block_size, num_blocks = 4, 2, 16, 4, 12
    spec = KVCacheSpec(1, kv_heads, dim, block_size, num_blocks, torch.float32, kv_bits=bits)
    cache = backend.allocate_kv_cache(spec)[0]
    attention = backend.attention()
    for seq, n in enumerate(history):
        if n:
            slots = torch.tensor([tables[seq][p // block_size] * block_size + p % block_size for p in range(n)])
            cache.store(slots, torch.randn(n, kv_heads, dim), torch.randn(n, kv_heads, dim))
    context_lens = [n + q for n, q in zip(history, query_lens)]
    slot_mapping = [tables[i][p // block_size] * block_size + p % block_size
                    for i in range(len(history)) for p in range(history[i], context_lens[i])]
    layout = BatchLayout(query_lens, context_lens, tables, slot_mapping, block_size)
    tokens = sum(query_lens)
    q, k, v = torch.randn(tokens, heads, dim), torch.randn(tokens, kv_heads, dim), torch.randn(tokens, kv_heads, dim)
    out = attention.forward(q, k, v, cache, attention.build_metadata(layout), dim ** -0.5)

    k_float, v_float = cache.gather(torch.arange(num_blocks), torch.float32)
    flat = torch.tensor(slot_mapping)
    k_float.view(-1, kv_heads, dim)[flat], v_float.view(-1, kv_heads, dim)[flat] = k, v  # new tokens exact
    return out, reference.paged_attention(q, k_float, v_float, tables, query_lens, context_lens, dim ** -0.5)


@pytest.mark.parametrize("bits", [8, 4])
def test_cpu_attention_over_a_quantized_cache_matches_the_reference(bits):
    """A mixed step (two decodes, a prefill with a cached prefix, a fresh prefill) against the
    reference paged attention over the dequantized cache; new tokens see their own K/V exactly."""
    out, expected = attend_over_a_quantized_cache(bits, [5, 9, 6, 0], [1, 1, 3, 5],
                                                  [[0, 1], [2, 3, 4], [5, 6, 9], [7, 8]])
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bits", [8, 4])
def test_decode_kernel_dequantizing_as_it_reads_matches_the_reference(bits):
    """Decodes only, of different lengths (one with no cached token yet): the C++ kernel path."""
    assert CPUBackend().attention().decode_kernel is not None, "the C++ kernels did not build here"
    out, expected = attend_over_a_quantized_cache(bits, [5, 10, 0], [1, 1, 1], [[0, 1], [2, 3, 4], [5]])
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
