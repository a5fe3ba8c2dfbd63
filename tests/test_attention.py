"""fusedseq.attention and torch.ops.fusedseq.attention_{fwd,bwd}."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import fusedseq
from fusedseq import reference

from conftest import (FP32_RTOL, assert_accurate, check_against_reference, dtype_params, fwd_bwd, nbytes,
                      poison_heap, rel_err, torch_attention, with_views)

# The ops these tests run: their emulated (and CUDA) variants need these ops' CUDA kernels.
pytestmark = pytest.mark.ops("attention_fwd", "attention_bwd")

ops = torch.ops.fusedseq

# (id, B, Hq, Hkv, Nq, Nk, D, causal, layout, scale). B=None: unbatched 3-D.
# Layouts, all reaching the op as views of other tensors:
#   "bnhd":        q/k/v made as (B, N, H, D) and transposed to (B, H, N, D);
#   "strided_d":   every other element of a (B, H, N, 2D) tensor (non-unit last stride);
#   "expanded_kv": k/v made as (1, Hkv, Nk, D) and expanded over B (stride 0).
CASES = [
    ("N1_D1", 1, 1, 1, 1, 1, 1, False, "contig", None),
    ("N1_D1_causal", 1, 1, 1, 1, 1, 1, True, "contig", None),
    ("decode_Nq1", 3, 3, 3, 1, 70, 33, False, "contig", None),
    ("decode_Nq1_causal_gqa", 2, 4, 2, 1, 17, 16, True, "bnhd", None),
    ("self_causal_D16", 2, 4, 4, 17, 17, 16, True, "bnhd", None),
    ("gqa8x2_causal_NqltNk_D64", 1, 8, 2, 5, 33, 64, True, "contig", None),
    ("mqa_causal_NqgtNk_D80", 2, 4, 1, 40, 9, 80, True, "bnhd", None),
    ("D128_scale", 1, 2, 2, 64, 64, 128, False, "strided_d", 0.3),
    ("D256_N300_causal", 1, 2, 1, 300, 300, 256, True, "bnhd", None),
    ("D256_NqneNk", 1, 4, 2, 130, 300, 256, False, "contig", None),
    ("D1_causal_expanded", 2, 6, 3, 65, 129, 1, True, "expanded_kv", None),
    ("gqa_expanded_D64", 2, 8, 2, 33, 47, 64, False, "expanded_kv", None),
    ("negative_scale", 1, 2, 1, 12, 20, 8, True, "contig", -0.7),
    ("zero_scale", 2, 2, 2, 9, 6, 8, False, "contig", 0.0),
    ("N1024_gqa_causal", 1, 4, 2, 1024, 1024, 64, True, "contig", None),
    ("unbatched_gqa_causal", None, 4, 2, 9, 12, 16, True, "contig", None),
    ("unbatched_bnhd", None, 2, 2, 7, 7, 8, False, "bnhd", None),
]


def attn_case(make, B, Hq, Hkv, Nq, Nk, D, layout):
    """Float64 leaves and the views that turn them into q, k, v."""
    lead = () if B is None else (B,)
    if layout == "bnhd":
        if B is None:
            q, k, v = make(Nq, Hq, D), make(Nk, Hkv, D), make(Nk, Hkv, D)
            t = lambda x: x.transpose(0, 1)  # noqa: E731
        else:
            q, k, v = make(B, Nq, Hq, D), make(B, Nk, Hkv, D), make(B, Nk, Hkv, D)
            t = lambda x: x.transpose(1, 2)  # noqa: E731
        return dict(q=q, k=k, v=v), {"q": t, "k": t, "v": t}
    if layout == "strided_d":
        q, k, v = make(*lead, Hq, Nq, 2 * D), make(*lead, Hkv, Nk, 2 * D), make(*lead, Hkv, Nk, 2 * D)
        t = lambda x: x[..., ::2]  # noqa: E731
        return dict(q=q, k=k, v=v), {"q": t, "k": t, "v": t}
    if layout == "expanded_kv":
        q, k, v = make(B, Hq, Nq, D), make(1, Hkv, Nk, D), make(1, Hkv, Nk, D)
        e = lambda x: x.expand(B, Hkv, Nk, D)  # noqa: E731
        return dict(q=q, k=k, v=v), {"k": e, "v": e}
    return dict(q=make(*lead, Hq, Nq, D), k=make(*lead, Hkv, Nk, D), v=make(*lead, Hkv, Nk, D)), {}


@pytest.mark.ops("attention_fwd", "attention_bwd")
@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize("case", [
    pytest.param(c, id=c[0], marks=[pytest.mark.skip_emulated("seconds per dtype on the emulator, whose grid (D = 256 "
                                                              "included) is tests/test_attention_cuda.py")]
                 if c[4] >= 1024 or c[6] == 256 else [])
    for c in CASES])
def test_attention_forward_backward(case, dtype, device, make, request):
    _, B, Hq, Hkv, Nq, Nk, D, causal, layout, scale = case
    inputs, views = attn_case(make, B, Hq, Hkv, Nq, Nk, D, layout)
    if layout != "contig":  # (a transpose over a size-1 dim stays contiguous, hence any)
        assert any(not view(inputs[n]).is_contiguous() for n, view in views.items())
    kw = dict(is_causal=causal, scale=scale)
    outs, grads = check_against_reference(
        with_views(fusedseq.attention, views, **kw), with_views(reference.attention, views, **kw), inputs, dtype,
        make, baseline=with_views(torch_attention, views, **kw), device=device)
    assert outs[0].shape == ((Hq, Nq, D) if B is None else (B, Hq, Nq, D))
    assert {n: g.shape for n, g in grads.items()} == {n: t.shape for n, t in inputs.items()}


LSE_CASES = [c for c in CASES if c[1] is not None and c[0] in (
    "N1_D1_causal", "decode_Nq1", "gqa8x2_causal_NqltNk_D64", "mqa_causal_NqgtNk_D80", "D256_NqneNk", "zero_scale")]


@pytest.mark.ops("attention_fwd")
@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize("case", LSE_CASES, ids=[c[0] for c in LSE_CASES])
def test_attention_with_lse(case, dtype, device, make, request):
    _, B, Hq, Hkv, Nq, Nk, D, causal, layout, scale = case
    inputs, views = attn_case(make, B, Hq, Hkv, Nq, Nk, D, layout)
    q, k, v = (views.get(n, lambda t: t)(inputs[n]).to(dtype) for n in "qkv")
    out, lse = fusedseq.attention_with_lse(q.to(device), k.to(device), v.to(device), is_causal=causal,
                                           scale=scale)
    # lse is accumulated and returned in fp32 (fp64 for fp64 inputs), so it
    # meets the fp32 bound whatever the input dtype.
    lse_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    assert lse.shape == (B, Hq, Nq) and not lse.requires_grad
    assert_accurate(lse, reference.attention_lse(q.double(), k.double(), is_causal=causal, scale=scale), lse_dtype, what="lse")
    assert_accurate(out, reference.attention(q.double(), k.double(), v.double(), is_causal=causal, scale=scale), dtype,
                    baseline=torch_attention(q, k, v, causal, scale))


SDPA_CASES = [  # (B, Hq, Hkv, Nq, Nk, D, causal, scale)
    (2, 4, 4, 16, 16, 32, False, None),
    (2, 4, 2, 7, 19, 16, True, None),
    (1, 6, 3, 23, 5, 24, True, 0.2),
    (3, 2, 1, 1, 11, 64, False, None),
]


@pytest.mark.parametrize("dtype", dtype_params([torch.float32, torch.float64]))
@pytest.mark.parametrize("case", SDPA_CASES, ids=lambda c: "B{}_Hq{}_Hkv{}_Nq{}_Nk{}_D{}_causal{}_scale{}".format(*c))
def test_matches_sdpa(case, dtype, make, request):
    B, Hq, Hkv, Nq, Nk, D, causal, scale = case
    q, k, v = (make(B, Hq, Nq, D, dtype=dtype), make(B, Hkv, Nk, D, dtype=dtype), make(B, Hkv, Nk, D, dtype=dtype))
    g = make(B, Hq, Nq, D, dtype=dtype)
    ours, ours_g = fwd_bwd(lambda q, k, v: fusedseq.attention(q, k, v, is_causal=causal, scale=scale), dict(q=q, k=k, v=v), [g])
    theirs, theirs_g = fwd_bwd(lambda q, k, v: F.scaled_dot_product_attention(
        q, k, v, is_causal=causal, scale=scale, enable_gqa=True), dict(q=q, k=k, v=v), [g])
    tol = FP32_RTOL if dtype == torch.float32 else 1e-12
    assert rel_err(ours[0], theirs[0]) <= tol
    for n in "qkv":
        assert rel_err(ours_g[n], theirs_g[n]) <= tol, n


def test_partial_requires_grad(make):
    """Only q needs a gradient (keys and values from a frozen cache), then only k and v."""
    f64 = dict(dtype=torch.float64)
    inputs = dict(q=make(2, 4, 9, 16, **f64), k=make(2, 2, 13, 16, **f64), v=make(2, 2, 13, 16, **f64))
    cots = [make(2, 4, 9, 16, dtype=torch.float64)]
    for names in (["q"], ["k", "v"]):
        _, got = fwd_bwd(lambda **kw: fusedseq.attention(**kw, is_causal=True), inputs, cots, grad_of=names,
                         dtype=torch.float32)
        _, ref = fwd_bwd(lambda **kw: reference.attention(**kw, is_causal=True), inputs, cots, grad_of=names)
        assert set(got) == set(names)
        for n in names:
            assert rel_err(got[n], ref[n]) <= FP32_RTOL, n


def test_same_tensor_as_q_k_and_v(make):
    """Self-attention on one tensor: three aliasing inputs, gradients summed."""
    x = make(2, 3, 11, 8, requires_grad=True)
    g = make(2, 3, 11, 8)
    (dx,) = torch.autograd.grad(fusedseq.attention(x, x, x, is_causal=True), [x], g)
    x64 = x.detach().double().requires_grad_()
    out64 = reference.attention(x64, x64, x64, is_causal=True)
    (dx64,) = torch.autograd.grad(out64, [x64], g.double())
    assert rel_err(fusedseq.attention(x, x, x, is_causal=True), out64) <= FP32_RTOL
    assert rel_err(dx, dx64) <= FP32_RTOL


def test_inference_mode(make):
    q, k, v = make(1, 2, 5, 8), make(1, 1, 6, 8), make(1, 1, 6, 8)
    with torch.inference_mode():
        out = fusedseq.attention(q, k, v, is_causal=True)
    assert rel_err(out, reference.attention(q.double(), k.double(), v.double(), is_causal=True)) <= FP32_RTOL


# ----------------------------------------------------------------- gradcheck --
GRADCHECK_CASES = [  # (B, Hq, Hkv, Nq, Nk, D, causal, scale)
    (1, 4, 2, 3, 5, 4, True, None),   # GQA, causal, Nq < Nk
    (2, 2, 1, 5, 3, 3, True, None),   # MQA, causal, Nq > Nk
    (1, 2, 2, 4, 4, 5, False, 0.8),
    (None, 2, 1, 3, 4, 2, True, None),  # unbatched
]


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=lambda c: "B{}_Hq{}_Hkv{}_Nq{}_Nk{}_D{}_causal{}_scale{}".format(*c))
def test_gradcheck(case, make):
    B, Hq, Hkv, Nq, Nk, D, causal, scale = case
    lead = () if B is None else (B,)
    kw = dict(dtype=torch.float64, requires_grad=True)
    args = (make(*lead, Hq, Nq, D, **kw), make(*lead, Hkv, Nk, D, **kw), make(*lead, Hkv, Nk, D, **kw))
    assert torch.autograd.gradcheck(lambda q, k, v: fusedseq.attention(q, k, v, is_causal=causal, scale=scale), args)


# ------------------------------------------------------- values and memory --
def _assert_matches_with_nans(out, ref, tol=FP32_RTOL):
    """Same NaN pattern as the reference, and the rest accurate."""
    assert torch.equal(out.isnan(), ref.isnan()), "NaN pattern differs from the reference"
    finite = ~ref.isnan()
    assert torch.isfinite(out[finite]).all()
    assert rel_err(out[finite], ref[finite]) <= tol


@pytest.mark.parametrize("causal", [False, True])
def test_nan_in_one_query_row(causal, make):
    q, k, v = make(2, 4, 10, 16), make(2, 2, 12, 16), make(2, 2, 12, 16)
    q[1, 3, 6, 5] = math.nan
    out = fusedseq.attention(q, k, v, is_causal=causal)
    ref = reference.attention(q.double(), k.double(), v.double(), is_causal=causal)
    assert out[1, 3, 6].isnan().all()
    assert ref.isnan().sum() == 16  # that row, nothing else
    _assert_matches_with_nans(out, ref)


def test_nan_in_a_key_reaches_only_the_queries_that_see_it(make):
    """Causal: query i sees keys j <= i, so a NaN in key 7 leaves queries 0..6
    untouched (the masked position must not be computed and multiplied by 0)."""
    q, k, v = make(1, 4, 12, 8), make(1, 2, 12, 8), make(1, 2, 12, 8)
    k[0, 1, 7, 3] = math.nan
    out = fusedseq.attention(q, k, v, is_causal=True)
    ref = reference.attention(q.double(), k.double(), v.double(), is_causal=True)
    assert out[0, 2:, 7:].isnan().all()  # query heads 2, 3 share kv head 1
    assert torch.isfinite(out[0, 2:, :7]).all() and torch.isfinite(out[0, :2]).all()
    _assert_matches_with_nans(out, ref)


def test_nan_in_a_value_element(make):
    q, k, v = make(1, 2, 6, 8), make(1, 1, 9, 8), make(1, 1, 9, 8)
    v[0, 0, 4, 2] = math.nan
    out = fusedseq.attention(q, k, v)
    ref = reference.attention(q.double(), k.double(), v.double())
    assert out[..., 2].isnan().all()
    _assert_matches_with_nans(out, ref)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("how", ["big_qk", "big_scale", "big_negative_scale"])
@pytest.mark.parametrize("dtype", dtype_params([torch.float32, torch.bfloat16]))
def test_large_logits_do_not_overflow(how, causal, dtype, make):
    """Logits of order ±1e4 (exp overflows fp32 past ~88): the online softmax
    must subtract the running max. Accuracy is judged like low precision
    against SDPA in the same dtype, since rounding the logits themselves
    already costs ~1e-3 absolute at this magnitude."""
    B, Hq, Hkv, Nq, Nk, D = 2, 4, 2, 33, 40, 16
    if how == "big_qk":
        q, k, scale = make(B, Hq, Nq, D, scale=100.0), make(B, Hkv, Nk, D, scale=100.0), None
    else:
        q, k = make(B, Hq, Nq, D), make(B, Hkv, Nk, D)
        scale = 2500.0 if how == "big_scale" else -2500.0
    v = make(B, Hkv, Nk, D)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    logits = reference.attention_scores(q.double(), k.double(), scale=scale)
    assert logits.abs().max() > 1e4
    out, lse = fusedseq.attention_with_lse(q, k, v, is_causal=causal, scale=scale)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    ref = reference.attention(q.double(), k.double(), v.double(), is_causal=causal, scale=scale)
    base = torch_attention(q, k, v, causal, scale)
    err, base_err = rel_err(out, ref), rel_err(base, ref)
    # Norm-wise as low precision; element by element against SDPA's own worst element plus the
    # rounding of one fp32 logit (eps·max|logit|, ~1e-3 here): that rounding is each
    # probability's inherent relative uncertainty and lands on different elements for different
    # summation orders (the baseline build, without FMA, differs from AVX2 and from SDPA).
    assert float(err) <= 2 * float(base_err) + (FP32_RTOL if dtype == torch.float32 else 1e-3), (err, base_err)
    logit_rounding = torch.finfo(torch.float32).eps * logits.abs().max().item()
    assert err.element[0] <= 2 * base_err.element[0] + logit_rounding, (err.element, base_err.element, logit_rounding)
    ref_lse = reference.attention_lse(q.double(), k.double(), is_causal=causal, scale=scale)
    assert rel_err(lse, ref_lse) <= FP32_RTOL
    # and the gradients stay finite too
    g = make(B, Hq, Nq, D, dtype=dtype)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    grads = torch.autograd.grad(fusedseq.attention(*leaves, is_causal=causal, scale=scale), leaves, g)
    assert all(torch.isfinite(t).all() for t in grads)


@pytest.mark.parametrize("dtype", dtype_params())
def test_outputs_fully_written(dtype, make):
    """Freshly allocated outputs over NaN-poisoned heap chunks; causal with
    Nq < Nk leaves keys Nq.. unseen by every query, so their gradient must be
    written as exact zeros, not skipped."""
    B, Hq, Hkv, Nq, Nk, D = 2, 4, 2, 21, 45, 16
    q, k, v = (make(B, Hq, Nq, D, dtype=dtype, requires_grad=True), make(B, Hkv, Nk, D, dtype=dtype, requires_grad=True),
               make(B, Hkv, Nk, D, dtype=dtype, requires_grad=True))
    g = make(B, Hq, Nq, D, dtype=dtype)
    shapes = [(B, Hq, Nq, D), (B, Hq, Nq), (B, Hkv, Nk, D)]
    sizes = [nbytes(s, d) for s in shapes for d in (dtype, torch.float32)]
    poison_heap(*sizes)
    out = fusedseq.attention(q, k, v, is_causal=True)
    poison_heap(*sizes)
    dq, dk, dv = torch.autograd.grad(out, [q, k, v], g)
    for t in (out, dq, dk, dv):
        assert torch.isfinite(t).all()
    assert torch.equal(dk[:, :, Nq:], torch.zeros_like(dk[:, :, Nq:]))
    assert torch.equal(dv[:, :, Nq:], torch.zeros_like(dv[:, :, Nq:]))
    ref_out, ref_g = fwd_bwd(lambda **kw: reference.attention(**kw, is_causal=True), dict(q=q, k=k, v=v), [g],
                             dtype=torch.float64)
    tol = 2e-2 if dtype in (torch.float16, torch.bfloat16) else (FP32_RTOL if dtype == torch.float32 else 1e-12)
    assert rel_err(out, ref_out[0]) <= tol
    for got, n in zip((dq, dk, dv), "qkv"):
        assert rel_err(got, ref_g[n]) <= tol, n


@pytest.mark.parametrize("dtype", dtype_params([torch.float32, torch.bfloat16]))
def test_deterministic(dtype, make):
    """GQA backward accumulates dk/dv over the query heads of a group: the
    order must not depend on thread timing."""
    q, k, v = (make(2, 8, 70, 32, dtype=dtype, requires_grad=True), make(2, 2, 90, 32, dtype=dtype, requires_grad=True),
               make(2, 2, 90, 32, dtype=dtype, requires_grad=True))
    g = make(2, 8, 70, 32, dtype=dtype)
    runs = []
    for _ in range(3):
        out, lse = fusedseq.attention_with_lse(q, k, v, is_causal=True)
        runs.append((out, lse, *torch.autograd.grad(out, [q, k, v], g)))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)


def test_thread_count_does_not_change_result(make):
    q, k, v = make(2, 4, 50, 16, dtype=torch.float64), make(2, 2, 60, 16, dtype=torch.float64), make(
        2, 2, 60, 16, dtype=torch.float64)
    n = torch.get_num_threads()
    out_n = fusedseq.attention(q, k, v, is_causal=True)
    try:
        torch.set_num_threads(1)
        out_1 = fusedseq.attention(q, k, v, is_causal=True)
    finally:
        torch.set_num_threads(n)
    assert rel_err(out_n, out_1) <= 1e-14


@pytest.mark.parametrize("autocast_dtype", dtype_params([torch.bfloat16, torch.float16]))
@pytest.mark.parametrize("causal", [False, True])
def test_autocast(causal, autocast_dtype, make):
    q, k, v = make(2, 4, 20, 32), make(2, 2, 25, 32), make(2, 2, 25, 32)
    with torch.autocast("cpu", dtype=autocast_dtype):
        out = fusedseq.attention(q, k, v, is_causal=causal)
    assert out.dtype == autocast_dtype
    rounded = [t.to(autocast_dtype) for t in (q, k, v)]
    ref = reference.attention(*(t.double() for t in rounded), is_causal=causal)
    assert_accurate(out, ref, autocast_dtype, baseline=torch_attention(*rounded, causal))


@pytest.mark.parametrize("D,scale", [(24, None), (64, 0.1), (16, -1.3)])
@pytest.mark.parametrize("causal", [False, True])
def test_float64_scale_is_not_rounded_to_float32(causal, D, scale, make, request):
    """float64 attention must be float64-accurate whatever the scale."""
    q, k, v = make(1, 2, 9, D, dtype=torch.float64), make(1, 2, 11, D, dtype=torch.float64), make(
        1, 2, 11, D, dtype=torch.float64)
    out, lse = fusedseq.attention_with_lse(q, k, v, is_causal=causal, scale=scale)
    assert rel_err(out, reference.attention(q, k, v, is_causal=causal, scale=scale)) <= 1e-12
    assert rel_err(lse, reference.attention_lse(q, k, is_causal=causal, scale=scale)) <= 1e-12


def test_double_backward_is_refused(make):
    """Differentiating the gradient must raise, not silently return zeros
    (which would corrupt e.g. a gradient penalty)."""
    kw = dict(dtype=torch.float64, requires_grad=True)
    q, k, v = make(1, 2, 3, 4, **kw), make(1, 1, 4, 4, **kw), make(1, 1, 4, 4, **kw)
    dq, = torch.autograd.grad(fusedseq.attention(q, k, v, is_causal=True).sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(dq.sum(), q)


# ------------------------------------------------------ tails and tiles --
# The CPU kernel works in BM×BN = 48×64 tiles of scores with 8-wide vectors
# along D: sizes just below, at and above those edges, and head dims that
# leave every possible vector tail. fp32 forward and backward.
# (Where a query sees a single key its gradient is exactly zero and only
# rounding noise is left, so norm-wise relative error means nothing: the
# decode case is non-causal and the short-key case has 3 keys.)
@pytest.mark.parametrize("D", [2, 3, 7, 9, 17, 31, 63, 65, 127, 129, 257, 512])
@pytest.mark.parametrize("Nq,Nk,causal", [(1, 200, False), (67, 131, True), (130, 3, True)])
def test_head_dim_sweep(Nq, Nk, causal, D, make, kernels):
    inputs = dict(q=make(1, 2, Nq, D), k=make(1, 1, Nk, D), v=make(1, 1, Nk, D))
    if kernels == "emulated" and D > 256:  # the CUDA kernels: a clear error naming the head dims they take
        with pytest.raises(ValueError, match="D <= 256"):
            fusedseq.attention(**inputs, is_causal=causal)
        return
    check_against_reference(lambda **kw: fusedseq.attention(**kw, is_causal=causal),
                            lambda **kw: reference.attention(**kw, is_causal=causal), inputs, torch.float32, make)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("Nq,Nk", [(47, 63), (48, 64), (49, 65), (96, 128), (97, 129), (48, 129), (129, 48),
                                   (200, 65), (1, 64), (64, 1), (513, 513)])
def test_tile_edges(Nq, Nk, causal, make):
    inputs = dict(q=make(2, 2, Nq, 16), k=make(2, 1, Nk, 16), v=make(2, 1, Nk, 16))
    check_against_reference(lambda **kw: fusedseq.attention(**kw, is_causal=causal),
                            lambda **kw: reference.attention(**kw, is_causal=causal), inputs, torch.float32, make)
