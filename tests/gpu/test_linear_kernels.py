"""The W4A16 linear paths (GEMV, skinny GEMM, dequantize + matmul) against the reference."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from .gpu_helpers import assert_close, poison_allocator, skip_bf16_dot_in_interpreter  # noqa: E402
from lite.backends import reference  # noqa: E402
from lite.backends.cuda.kernels import activation, gemv, int4_gemv_triton, linear  # noqa: E402
from lite.quantize.int4 import quantize_int4  # noqa: E402

# The GEMV linear_w4a16 uses (Gluon where Triton has it, except in the interpreter), and the
# plain-Triton fallback too wherever that is not the one in use.
GEMVS = [linear.int4_gemv] + ([int4_gemv_triton] if linear.int4_gemv is not int4_gemv_triton else [])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("rows", [1, 5, 16, 40])  # 1: GEMV; up to 16: skinny GEMM; 40: dequantize + matmul
@pytest.mark.parametrize("group_size,in_features", [(128, 1024), (64, 640), (128, 640)])
def test_w4a16_linear_matches_reference(device, dtype, rows, group_size, in_features):
    if 1 < rows <= linear.SKINNY_MAX_ROWS:
        skip_bf16_dot_in_interpreter(dtype)
    out_features = 4096 + 48  # not a multiple of the row tiles
    int4 = quantize_int4(torch.randn(out_features, in_features), group_size)
    x = torch.randn(rows, in_features, device=device).to(dtype)
    bias = torch.randn(out_features, device=device).to(dtype)
    prepared = linear.prepare_w4a16(int4, device)
    poison_allocator(device, rows * out_features * 4)
    out = linear.linear_w4a16(x, prepared, bias)
    # The reference dequantizes on every call; in float32 here, so only our rounding counts.
    want = reference.linear_w4a16(x.float().cpu(), int4, bias.float().cpu())
    assert_close(out.cpu(), want, dtype, scale=100 if dtype == torch.float32 else 1)


@pytest.mark.parametrize("kernels", GEMVS, ids=lambda module: module.__name__.rsplit("_", 1)[-1])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("out_features,in_features", [(16384 + 16, 256), (520, 1280), (3100, 3072), (640, 640)])
def test_int4_gemv_matches_reference_with_the_tiles_of_each_shape(device, kernels, dtype, out_features, in_features):
    # Many rows; long rows (down_proj); more rows than columns (qkv_proj); square (o_proj).
    int4 = quantize_int4(torch.randn(out_features, in_features), 128)
    x = torch.randn(1, in_features, device=device).to(dtype)
    poison_allocator(device, out_features * 4)
    out = kernels.gemv(x, linear.prepare_w4a16(int4, device), **kernels.gemv_tiles(out_features, in_features))
    want = reference.linear_w4a16(x.float().cpu(), int4)
    assert_close(out.cpu(), want, dtype, scale=100 if dtype == torch.float32 else 1)


@pytest.mark.parametrize("group_size", [8, 16, 32])  # a thread's words in one group: 1, 2 and 4 of them
def test_int4_gemv_matches_reference_for_small_groups(device, group_size):
    int4 = quantize_int4(torch.randn(1000, 512), group_size)
    x = torch.randn(1, 512, device=device, dtype=torch.bfloat16)
    out = linear.linear_w4a16(x, linear.prepare_w4a16(int4, device))
    assert_close(out.cpu(), reference.linear_w4a16(x.float().cpu(), int4), torch.bfloat16)


def test_int4_dequantization_is_exact(device):
    int4 = quantize_int4(torch.randn(300, 512), 128)
    prepared = linear.prepare_w4a16(int4, device)
    assert torch.equal(linear.dequantize_int4(prepared, torch.float32).cpu(), int4.dequantize(torch.float32))


def test_split_k_gemv_sums_are_identical_call_after_call(device):
    # The last split to arrive adds the partials in split order, whichever arrives last, and
    # leaves its counters at zero for the next call (another shape's call in between included).
    long_rows = linear.prepare_w4a16(quantize_int4(torch.randn(1000 + 48, 4096), 128), device)  # as down_proj
    other = linear.prepare_w4a16(quantize_int4(torch.randn(500, 2048), 128), device)
    x = torch.randn(1, 4096, device=device, dtype=torch.bfloat16)
    assert linear.int4_gemv.gemv_tiles(*long_rows.shape)["splits"] > 1
    assert linear.int4_gemv.gemv_tiles(*other.shape)["splits"] > 1
    first = linear.linear_w4a16(x, long_rows)
    for _ in range(20):
        linear.linear_w4a16(x[:, :2048], other)
        assert torch.equal(linear.linear_w4a16(x, long_rows), first)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("width,in_features,bias", [(14336, 4096, False), (1003, 640, True), (8, 256, False)])
def test_fused_silu_and_mul_gemv_matches_reference(device, needs_cuda, dtype, width, in_features, bias):
    # Gluon only: the plain-Triton fallback has no gated epilogue (linear_w4a16_silu_and_mul
    # then runs the two kernels).
    int4 = quantize_int4(torch.randn(2 * width, in_features), 128)
    x = torch.randn(1, in_features, device=device).to(dtype)
    b = torch.randn(2 * width, device=device).to(dtype) if bias else None
    weight = linear.prepare_w4a16(int4, device)
    poison_allocator(device, 4 * width)
    fused = linear.linear_w4a16_silu_and_mul(x, weight, b)
    assert fused.shape == (1, width)
    want = reference.silu_and_mul(reference.linear_w4a16(x.float().cpu(), int4, b.float().cpu() if bias else None))
    assert_close(fused.cpu(), want, dtype, scale=100 if dtype == torch.float32 else 1)


def test_fused_silu_and_mul_gemv_is_bit_identical_to_the_two_kernels_in_bfloat16(device, needs_cuda):
    # What models run in. In float16 and float32 the fused kernel's sums round differently from the
    # plain GEMV's (measured on an H100: most outputs equal, some off by the GEMV's own rounding;
    # likely the compiler ordering the in-thread sums differently, which bfloat16's shorter
    # mantissa leaves exact), so there the test above holds both to the reference instead.
    x = torch.randn(1, 4096, device=device).to(torch.bfloat16)
    weight = linear.prepare_w4a16(quantize_int4(torch.randn(2 * 14336, 4096), 128), device)
    fused = linear.linear_w4a16_silu_and_mul(x, weight)
    assert torch.equal(fused, activation.silu_and_mul(linear.linear_w4a16(x, weight)))


@pytest.mark.parametrize("rows", [1, 3])
def test_linear_w4a16_silu_and_mul_matches_reference(device, rows):
    skip_bf16_dot_in_interpreter(torch.bfloat16)
    x = torch.randn(rows, 640, device=device).to(torch.bfloat16)
    q = quantize_int4(torch.randn(2 * 300, 640), 64)
    out = linear.linear_w4a16_silu_and_mul(x, linear.prepare_w4a16(q, device))
    want = reference.silu_and_mul(reference.linear_w4a16(x.float().cpu(), q))
    assert_close(out.float().cpu(), want, torch.bfloat16)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("block_n,block_k", [(8, 1024), (4, 256), (16, 128)])
@pytest.mark.parametrize("in_features", [1024, 1000])  # 1000: a ragged last tile
def test_16_bit_gemv_matches_reference(device, dtype, block_n, block_k, in_features):
    out_features = 4096 + 40  # not a multiple of the row tiles
    weight = torch.randn(out_features, in_features, device=device).to(dtype)
    x = torch.randn(1, in_features, device=device).to(dtype)
    bias = torch.randn(out_features, device=device).to(dtype)
    poison_allocator(device, out_features * 4)
    out = gemv.gemv(x, weight, bias, block_n, block_k)
    want = torch.nn.functional.linear(x.float().cpu(), weight.float().cpu(), bias.float().cpu())
    assert_close(out.cpu(), want, dtype, scale=10 if dtype == torch.float32 else 1)


@pytest.mark.parametrize("rows", [1, 3])  # 1: the GEMV; more: cuBLAS
def test_16_bit_linear_matches_reference_at_any_batch(device, rows):
    weight = torch.randn(1000, 512, device=device, dtype=torch.bfloat16)
    x = torch.randn(rows, 512, device=device, dtype=torch.bfloat16)
    want = torch.nn.functional.linear(x.float().cpu(), weight.float().cpu())
    assert_close(gemv.linear(x, weight).cpu(), want, torch.bfloat16)
