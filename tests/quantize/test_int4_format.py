"""int4 numbers and layouts: quantization, AutoAWQ/GPTQ packing, the W4A16 linear ops and the int8 head."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lite.backends import reference
from lite.backends.cpu import quantized_linear
from lite.quantize.awq_format import (UnsupportedCheckpoint, int4_weights, pack_awq, read_int4_checkpoint,
                                      unpack_awq)
from lite.quantize.int4 import Int4Weight, fake_quantize_int4, quantize_int4


def random_int4(rows: int, cols: int, group_size: int, seed: int = 0) -> Int4Weight:
    gen = torch.Generator().manual_seed(seed)
    return Int4Weight(torch.randint(0, 16, (rows, cols), generator=gen, dtype=torch.uint8),
                      (torch.rand(rows, cols // group_size, generator=gen) * 0.02 + 1e-3).half(),
                      torch.randint(0, 16, (rows, cols // group_size), generator=gen, dtype=torch.uint8),
                      group_size)


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 12).map(lambda n: 8 * n), groups=st.integers(1, 4),
       group_size=st.sampled_from([32, 64, 128]), seed=st.integers(0, 2**16))
def test_awq_pack_unpack_round_trips_exactly(rows, groups, group_size, seed):
    weight = random_int4(rows, groups * group_size, group_size, seed)
    unpacked = unpack_awq(**pack_awq(weight))
    assert torch.equal(unpacked.qweight, weight.qweight)
    assert torch.equal(unpacked.zeros, weight.zeros)
    assert torch.equal(unpacked.scales, weight.scales)
    assert unpacked.group_size == group_size


def test_awq_packing_uses_the_autoawq_nibble_order():
    # One int32 holds output columns 0..7; AutoAWQ puts column [0, 2, 4, 6, 1, 3, 5, 7][i] in nibble i.
    weight = Int4Weight(torch.arange(8, dtype=torch.uint8).repeat(32, 1).t().contiguous(),
                        torch.ones(8, 1, dtype=torch.float16), torch.zeros(8, 1, dtype=torch.uint8), 32)
    packed = pack_awq(weight)["qweight"]  # [in=32, out/8=1]
    nibbles = [(int(packed[0, 0]) >> (4 * i)) & 0xF for i in range(8)]
    assert nibbles == [0, 2, 4, 6, 1, 3, 5, 7]


def test_quantize_int4_error_is_within_half_a_step():
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(0))
    q = quantize_int4(w, 64)
    step = q.scales.float().repeat_interleave(64, dim=1)
    assert ((q.dequantize() - w).abs() <= step * 0.501).all()  # 0.001: float rounding
    assert torch.equal(fake_quantize_int4(w, 64), q.dequantize())


def test_quantize_int4_rejects_a_group_size_that_does_not_divide():
    with pytest.raises(ValueError, match="does not divide"):
        quantize_int4(torch.randn(8, 100), 64)


def test_checkpoint_stream_groups_a_modules_parts_across_shards():
    weight = random_int4(16, 64, 32)
    parts = pack_awq(weight)
    stream = [("a.qweight", parts["qweight"]), ("norm.weight", torch.ones(3)), ("a.qzeros", parts["qzeros"]),
              ("a.scales", parts["scales"])]
    out = dict(int4_weights(stream, read_int4_checkpoint(
        {"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 32, "version": "gemm"}})))
    assert set(out) == {"norm.weight", "a.weight"}
    assert torch.equal(out["a.weight"].qweight, weight.qweight)


@pytest.mark.parametrize("config, message", [
    ({"quant_method": "awq", "bits": 8}, "8 bits"),
    ({"quant_method": "awq", "bits": 4, "version": "gemv"}, "gemv"),
    ({"quant_method": "gptq", "bits": 4, "checkpoint_format": "marlin"}, "marlin"),
    ({"quant_method": "bitsandbytes"}, "bitsandbytes"),
])
def test_unsupported_quantization_configs_are_named(config, message):
    with pytest.raises(UnsupportedCheckpoint, match=message):
        read_int4_checkpoint({"quantization_config": config})


@pytest.mark.parametrize("rows, cols, group_size", [(96, 256, 64), (576, 1536, 64), (192, 576, 32),
                                                     (64, 512, 128)])
def test_w4a16_reference_matches_dequantized_fp32_matmul(rows, cols, group_size):
    weight = random_int4(rows, cols, group_size)
    x, bias = torch.randn(5, cols), torch.randn(rows)
    expected = x.double() @ weight.dequantize(torch.float64).t() + bias.double()
    got = reference.linear_w4a16(x, reference.prepare_w4a16(weight), bias)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tokens", [1, 3, 17])
@pytest.mark.parametrize("rows, cols, group_size", [(96, 256, 64), (576, 1536, 64), (192, 576, 32)])
def test_w4a16_cpu_kernel_matches_dequantized_fp32_matmul(rows, cols, group_size, tokens):
    weight = random_int4(rows, cols, group_size)
    prepared = quantized_linear.prepare_w4a16(weight)
    assert isinstance(prepared, quantized_linear.CPUInt4Weight)  # the int4 kernel, not the fallback
    x, bias = torch.randn(tokens, cols), torch.randn(rows)
    expected = x @ weight.dequantize().t() + bias
    got = quantized_linear.linear_w4a16(x, prepared, bias)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    # bfloat16 activations and scales ("A16"): a few parts in a thousand of the output's scale.
    assert (got - expected).abs().max() <= 1e-2 * expected.abs().max()


def test_w4a16_cpu_falls_back_for_shapes_the_kernel_refuses():
    weight = random_int4(24, 64, 32)  # 24 output rows: the kernel wants multiples of 16
    prepared = quantized_linear.prepare_w4a16(weight)
    assert isinstance(prepared, Int4Weight)
    x = torch.randn(2, 64)
    torch.testing.assert_close(quantized_linear.linear_w4a16(x, prepared), x @ weight.dequantize().t())


@pytest.mark.parametrize("tokens", [1, 40])  # 40 rows: past the int8 kernel's 16-row chunks
def test_int8_head_matches_its_dequantized_weight_and_stays_close_to_float(tokens):
    weight, x = torch.randn(1000, 192), torch.randn(tokens, 192)
    reference_weight = reference.prepare_w8a16(weight)
    assert reference_weight.qweight.dtype == torch.int8 and reference_weight.scales.shape == (1000,)
    expected = x @ reference_weight.dequantize().t()
    torch.testing.assert_close(reference.linear_w8a16(x, reference_weight), expected, rtol=1e-5, atol=1e-4)
    got = quantized_linear.linear_w8a16(x, quantized_linear.prepare_w8a16(weight))
    assert got.shape == (tokens, 1000) and got.dtype == torch.float32
    assert (got - expected).abs().max() <= 1e-2 * expected.abs().max()  # bfloat16 activations
    assert (expected - x @ weight.t()).abs().max() <= 2e-2 * expected.abs().max()  # int8: 1/254 of the range
