"""The device abstraction: selection, and every CPU op against its plain-PyTorch reference."""
import random

import pytest
import torch

from lite.backends import BatchLayout, availability, names, reference, select
from lite.backends.cpu import CPUBackend
from lite.backends.cpu.attention import CPUAttention
from lite.backends.cpu.kernels import cpu_kernels


def test_auto_selects_cpu_on_a_machine_without_accelerators():
    assert select("auto").name == "cpu"


def test_every_backend_reports_a_reason():
    for name in names():
        assert availability(name).reason


def test_unavailable_backend_says_what_is_missing():
    with pytest.raises(RuntimeError, match="not usable here: no CUDA device"):
        select("cuda")


def test_unknown_backend_lists_the_choices():
    with pytest.raises(ValueError, match="choose one of: auto, cuda"):
        select("tpu")


def random_batch(query_lens, context_lens, block_size=4, num_kv_heads=2, group=3, head_dim=16):
    """A paged cache already holding each sequence's earlier tokens, plus the new q/k/v."""
    num_blocks = sum(-(-c // block_size) for c in context_lens) + 1
    k_cache = torch.randn(num_blocks, block_size, num_kv_heads, head_dim)
    v_cache = torch.randn(num_blocks, block_size, num_kv_heads, head_dim)
    free = list(range(1, num_blocks))
    random.Random(0).shuffle(free)  # scattered blocks, as after a while of serving
    tables, slots = [], []
    for q_len, ctx_len in zip(query_lens, context_lens):
        table = [free.pop() for _ in range(-(-ctx_len // block_size))]
        tables.append(table)
        slots += [table[p // block_size] * block_size + p % block_size for p in range(ctx_len - q_len, ctx_len)]
    tokens = sum(query_lens)
    q = torch.randn(tokens, num_kv_heads * group, head_dim)
    k, v = torch.randn(tokens, num_kv_heads, head_dim), torch.randn(tokens, num_kv_heads, head_dim)
    return q, k, v, k_cache, v_cache, BatchLayout(list(query_lens), list(context_lens), tables, slots, block_size)


@pytest.mark.parametrize("query_lens,context_lens", [
    ([1], [9]),                       # one decode
    ([1, 1, 1], [3, 17, 8]),          # decodes of different lengths (padding masked)
    ([6], [6]),                       # a prompt with no cached prefix
    ([5, 3], [13, 3]),                # a prefix-cache hit / a later chunk, then a fresh prompt
    ([1, 1, 4, 7], [5, 12, 9, 7]),    # decodes and prefills in one step
])
@pytest.mark.parametrize("decode_kernel", ["c++", "torch"])
def test_cpu_paged_attention_matches_reference(query_lens, context_lens, decode_kernel):
    q, k, v, k_cache, v_cache, layout = random_batch(query_lens, context_lens)
    expected_k, expected_v = k_cache.clone(), v_cache.clone()
    slots = torch.tensor(layout.slot_mapping)
    expected_k.view(-1, *k.shape[1:])[slots] = k
    expected_v.view(-1, *v.shape[1:])[slots] = v
    want = reference.paged_attention(q, expected_k, expected_v, layout.block_tables, query_lens,
                                     context_lens, scale=0.25)
    attention = CPUAttention(cpu_kernels() if decode_kernel == "c++" else None)
    if decode_kernel == "c++":
        assert attention.decode_kernel is not None, "the C++ kernel did not build on this machine"
    got = attention.forward(q, k, v, (k_cache, v_cache), attention.build_metadata(layout), scale=0.25)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(k_cache, expected_k)  # the store wrote every new token's slot
    torch.testing.assert_close(v_cache, expected_v)


@pytest.mark.parametrize("op", ["rms_norm", "add_rms_norm", "silu_and_mul"])
def test_cpu_fused_ops_match_reference_in_float32_and_bfloat16(op):
    ops = CPUBackend().ops
    for dtype, tolerance in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
        x, residual = torch.randn(5, 3, 96, dtype=dtype), torch.randn(5, 3, 96, dtype=dtype)
        weight = (torch.rand(96) + 0.5).to(dtype)
        args = {"rms_norm": (x, weight, 1e-6), "add_rms_norm": (x, residual, weight, 1e-6),
                "silu_and_mul": (x,)}[op]
        torch.testing.assert_close(getattr(ops, op)(*args), getattr(reference, op)(*args),
                                   atol=tolerance, rtol=tolerance)


def test_cpu_kernels_build_without_openmp_or_not_at_all(monkeypatch, caplog):
    import torch.utils.cpp_extension

    from lite.backends.cpu import kernels

    tried = []

    def load_without_openmp(name, extra_cflags, **_):
        tried.append(extra_cflags[-1])
        if "-fopenmp" in extra_cflags:
            raise RuntimeError("clang: error: unsupported option '-fopenmp'")
        return "module"

    monkeypatch.setattr(torch.utils.cpp_extension, "load", load_without_openmp)
    assert kernels.cpu_kernels.__wrapped__() == "module" and tried == ["-fopenmp", "-fopenmp-simd"]

    def load_without_a_compiler(**_):
        raise OSError("no c++")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", load_without_a_compiler)
    assert kernels.cpu_kernels.__wrapped__() is None
    assert "CPU C++ kernels unavailable (no c++)" in caplog.text
