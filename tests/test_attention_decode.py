"""The decoding path: few queries (Nq <= 16) against a long key/value cache.
The query heads of a GQA group share one tile (K and V read once per group),
K is read as stored, and when the tiles cannot occupy every thread the keys
are split across threads and the partial results merged by log-sum-exp
(flash-decoding). Forward and gradients against the float64 reference, with
masks and windows, whatever the thread count."""
from __future__ import annotations

import pytest
import torch

import fusedseq
from fusedseq import reference

from conftest import check_against_reference, dtype_params, rel_err, torch_attention

# The ops these tests run: their emulated (and CUDA) variants need these ops' CUDA kernels.
pytestmark = pytest.mark.ops("attention_fwd", "attention_bwd")

# (B, Hq, Hkv, Nq, Nk, D): B = 1 splits the keys; B = 4 has tiles enough.
SHAPES = [
    (1, 8, 2, 1, 3000, 64),
    (1, 4, 4, 1, 1500, 32),
    (4, 8, 2, 1, 700, 16),
    (1, 8, 2, 4, 2100, 32),
    (2, 6, 2, 16, 1100, 8),   # 3 heads x 16 rows = one 48-row tile per group
    (1, 4, 1, 17, 900, 16),   # just past the decoding threshold: K packed
    (1, 2, 2, 1, 1, 8),       # a cache of one key
]


@pytest.mark.ops("attention_fwd", "attention_bwd")
@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize("shape", [
    pytest.param(s, id="B{}_Hq{}_Hkv{}_Nq{}_Nk{}_D{}".format(*s),
                 marks=[pytest.mark.skip_emulated("seconds on the emulator; the CUDA kernel has no split-KV path "
                                                  "for these to exercise")] if s[4] >= 700 else [])
    for s in SHAPES])
def test_decode_shapes(shape, dtype, device, make):
    B, Hq, Hkv, Nq, Nk, D = shape
    inputs = dict(q=make(B, Hq, Nq, D), k=make(B, Hkv, Nk, D), v=make(B, Hkv, Nk, D))
    check_against_reference(fusedseq.attention, reference.attention, inputs, dtype, make, baseline=torch_attention,
                            device=device)


@pytest.mark.parametrize("dtype", dtype_params([torch.float32, torch.bfloat16]))
def test_decode_with_key_padding_and_window(dtype, make):
    """Batched generation: left-padded caches (a key-padding mask) and a
    sliding window over the cache."""
    B, Hq, Hkv, Nq, Nk, D = 3, 8, 2, 1, 2000, 32
    pad = torch.ones(B, 1, 1, Nk, dtype=torch.bool)
    pad[0, ..., :700] = False
    pad[2, ..., :1999] = False  # one real key
    inputs = dict(q=make(B, Hq, Nq, D), k=make(B, Hkv, Nk, D), v=make(B, Hkv, Nk, D))
    window = (-1, 1500)  # Nq = 1 sits at key 0 (top-left): right-bounded window of the cache
    visible = pad & reference.attention_visible(Nq, Nk, False, window)
    check_against_reference(lambda **t: fusedseq.attention(**t, attn_mask=pad, window=window),
                            lambda **t: reference.attention(**t, attn_mask=pad, window=window), inputs, dtype, make,
                            baseline=lambda **t: torch_attention(**t, attn_mask=visible))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_split_count_does_not_change_the_answer(threads, make):
    """The number of key splits follows the thread count; the result must
    not, beyond rounding (float64: 1e-14)."""
    f64 = dict(dtype=torch.float64)
    q, k, v = make(1, 4, 1, 32, **f64), make(1, 2, 5000, 32, **f64), make(1, 2, 5000, 32, **f64)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        out, lse = fusedseq.attention_with_lse(q, k, v)
    finally:
        torch.set_num_threads(n)
    assert rel_err(out, reference.attention(q, k, v)) <= 1e-14
    assert rel_err(lse, reference.attention_lse(q, k)) <= 1e-14


def test_decode_split_rows_with_nothing_in_some_splits(make):
    """A key-padding mask that hides whole splits of the cache: those splits
    contribute nothing, the merge takes the rest."""
    f64 = dict(dtype=torch.float64)
    q, k, v = make(1, 4, 1, 16, **f64), make(1, 2, 6000, 16, **f64), make(1, 2, 6000, 16, **f64)
    mask = torch.zeros(1, 1, 1, 6000, dtype=torch.bool)
    mask[..., 5000:5003] = True
    out = fusedseq.attention(q, k, v, attn_mask=mask)
    assert rel_err(out, reference.attention(q, k, v, attn_mask=mask)) <= 1e-13
