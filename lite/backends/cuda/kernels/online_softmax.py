"""The flash-attention accumulation step shared by the decode and prefill attention kernels."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def online_softmax_step(m, l, acc, s, v, PRECISION: tl.constexpr):
    """Fold one tile of scores s [rows, keys] (log2 units, masked ones -inf) and its values v
    [keys, dims] into the running row maxima m, softmax denominators l and outputs acc."""
    m_new = tl.maximum(m, tl.max(s, 1))
    alpha = tl.exp2(m - m_new)
    p = tl.exp2(s - m_new[:, None])
    l = l * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return m_new, l, acc
