"""The raw attention ops (torch.ops.fusedseq.attention_*): opcheck (schema,
fake kernels, autograd registration), torch.compile(fullgraph=True), the
backward ops against autograd of the reference, and autocast, each with
masks, windows, dropout and packed sequences in play."""
from __future__ import annotations

import math

import pytest
import torch

import fusedseq
from fusedseq import reference

from conftest import FP32_RTOL, assert_accurate, fwd_bwd, rel_err, torch_attention

# The ops these tests run: their emulated (and CUDA) variants need these ops' CUDA kernels.
pytestmark = pytest.mark.ops("attention_fwd", "attention_bwd", "attention_varlen_fwd", "attention_varlen_bwd",
                             "attention_dropout_mask")

ops = torch.ops.fusedseq


def raw_fwd(q, k, v, mask=None, p=0.0, causal=False, scale=0.5, window=(-1, -1), seed=0, offset=0):
    return ops.attention_fwd(q, k, v, mask, p, causal, scale, window[0], window[1], seed, offset)


def raw_bwd(g, q, k, v, out, lse, lse_lo, mask=None, p=0.0, causal=False, scale=0.5, window=(-1, -1), seed=0,
            offset=0):
    return ops.attention_bwd(g, q, k, v, out, lse, lse_lo, mask, p, causal, scale, window[0], window[1], seed, offset)


def _qkv(make, dtype, B, Hq, Hkv, Nq, Nk, D, bnhd=False, requires_grad=True):
    kw = dict(dtype=dtype, requires_grad=requires_grad)
    if bnhd:
        return tuple(t.transpose(1, 2) for t in (make(B, Nq, Hq, D, **kw), make(B, Nk, Hkv, D, **kw),
                                                 make(B, Nk, Hkv, D, **kw)))
    return make(B, Hq, Nq, D, **kw), make(B, Hkv, Nk, D, **kw), make(B, Hkv, Nk, D, **kw)


def _mask(kind, B, Hq, Nq, Nk, dtype):
    g = torch.Generator().manual_seed(Nq * 131 + Nk)
    if kind == "none":
        return None
    if kind == "bool_qk":
        return torch.rand(Nq, Nk, generator=g) > 0.3
    if kind == "bool_keypad":
        m = torch.ones(B, 1, 1, Nk, dtype=torch.bool)
        m[0, ..., : Nk // 2] = False
        return m
    if kind == "float_bh":
        return torch.randn(B, Hq, Nq, Nk, generator=g, dtype=torch.float64).to(dtype)
    raise ValueError(kind)


# (id, dtype, B, Hq, Hkv, Nq, Nk, D, causal, bnhd, mask, dropout_p, window)
OPCHECK_SAMPLES = [
    ("fp32_gqa_causal", torch.float32, 2, 4, 2, 7, 9, 16, True, False, "none", 0.0, (-1, -1)),
    ("fp64_bnhd_boolmask", torch.float64, 1, 2, 2, 5, 3, 8, False, True, "bool_qk", 0.0, (-1, -1)),
    ("bf16_Nq1_keypad", torch.bfloat16, 2, 2, 1, 1, 6, 32, False, False, "bool_keypad", 0.0, (-1, -1)),
    ("fp16_D1_floatmask", torch.float16, 1, 3, 3, 4, 4, 1, False, False, "float_bh", 0.0, (-1, -1)),
    ("fp32_dropout_window", torch.float32, 2, 4, 2, 20, 33, 8, True, False, "none", 0.25, (5, -1)),
    ("fp64_window_mask_dropout", torch.float64, 1, 2, 1, 9, 70, 4, False, False, "bool_qk", 0.5, (3, 4)),
]


@pytest.mark.parametrize("sample", OPCHECK_SAMPLES, ids=[s[0] for s in OPCHECK_SAMPLES])
def test_opcheck_attention_fwd(sample, make):
    _, dtype, B, Hq, Hkv, Nq, Nk, D, causal, bnhd, mk, p, window = sample
    q, k, v = _qkv(make, dtype, B, Hq, Hkv, Nq, Nk, D, bnhd)
    mask = _mask(mk, B, Hq, Nq, Nk, dtype)
    torch.library.opcheck(ops.attention_fwd.default,
                          (q, k, v, mask, p, causal, 1.0 / math.sqrt(D), window[0], window[1], 1234, 5))


@pytest.mark.parametrize("sample", OPCHECK_SAMPLES, ids=[s[0] for s in OPCHECK_SAMPLES])
def test_opcheck_attention_bwd(sample, make):
    _, dtype, B, Hq, Hkv, Nq, Nk, D, causal, bnhd, mk, p, window = sample
    q, k, v = _qkv(make, dtype, B, Hq, Hkv, Nq, Nk, D, bnhd, requires_grad=False)
    mask = _mask(mk, B, Hq, Nq, Nk, dtype)
    scale = 1.0 / math.sqrt(D)
    out, lse, lse_lo = raw_fwd(q, k, v, mask, p, causal, scale, window, 99, 0)
    torch.library.opcheck(ops.attention_bwd.default,
                          (make(B, Hq, Nq, D, dtype=dtype), q, k, v, out, lse, lse_lo, mask, p, causal, scale,
                           window[0], window[1], 99, 0))


VARLEN_SAMPLES = [  # (id, dtype, lens_q, lens_k, Hq, Hkv, D, causal, p, window)
    ("fp32_gqa_causal", torch.float32, [3, 7, 1], [3, 7, 1], 4, 2, 16, True, 0.0, (-1, -1)),
    ("fp64_cross_empty", torch.float64, [2, 0, 5], [6, 3, 0], 2, 2, 8, False, 0.0, (-1, -1)),
    ("bf16_window_dropout", torch.bfloat16, [9, 4], [12, 4], 2, 1, 32, True, 0.2, (2, 1)),
]


def _varlen(make, dtype, lens_q, lens_k, Hq, Hkv, D, requires_grad=True):
    cu = lambda lens: torch.tensor([0] + list(torch.tensor(lens).cumsum(0)), dtype=torch.int32)  # noqa: E731
    kw = dict(dtype=dtype, requires_grad=requires_grad)
    return (make(sum(lens_q), Hq, D, **kw), make(sum(lens_k), Hkv, D, **kw), make(sum(lens_k), Hkv, D, **kw),
            cu(lens_q), cu(lens_k))


@pytest.mark.parametrize("sample", VARLEN_SAMPLES, ids=[s[0] for s in VARLEN_SAMPLES])
def test_opcheck_attention_varlen(sample, make):
    _, dtype, lens_q, lens_k, Hq, Hkv, D, causal, p, window = sample
    q, k, v, cu_q, cu_k = _varlen(make, dtype, lens_q, lens_k, Hq, Hkv, D)
    args = (q, k, v, cu_q, cu_k, max(lens_q), max(lens_k), p, causal, 0.3, window[0], window[1], 7, 0)
    torch.library.opcheck(ops.attention_varlen_fwd.default, args)
    with torch.no_grad():
        out, lse, lse_lo = ops.attention_varlen_fwd(*args)
    g = make(*q.shape, dtype=dtype)
    torch.library.opcheck(ops.attention_varlen_bwd.default,
                          (g, q.detach(), k.detach(), v.detach(), out, lse, lse_lo) + args[3:])


def test_opcheck_dropout_mask(make):
    q = make(2, 3, 5, 4)
    torch.library.opcheck(ops.attention_dropout_mask.default, (q, 17, 0.3, 42, 8))


# (a mask and is_causal are exclusive, as in SDPA)
@pytest.mark.parametrize("causal,mk", [(False, "none"), (True, "none"), (False, "bool_qk"), (False, "float_bh")])
def test_raw_backward_op_matches_autograd_of_reference(causal, mk, make):
    B, Hq, Hkv, Nq, Nk, D = 2, 6, 2, 13, 21, 24
    q, k, v = _qkv(make, torch.float64, B, Hq, Hkv, Nq, Nk, D, requires_grad=False)
    mask = _mask(mk, B, Hq, Nq, Nk, torch.float64)
    g = make(B, Hq, Nq, D, dtype=torch.float64)
    scale = 0.375
    out, lse, lse_lo = raw_fwd(q, k, v, mask, 0.0, causal, scale)
    assert lse.dtype == lse_lo.dtype == torch.float64
    got = raw_bwd(g, q, k, v, out, lse, lse_lo, mask, 0.0, causal, scale)
    _, ref = fwd_bwd(lambda **kw: reference.attention(**kw, attn_mask=mask, is_causal=causal, scale=scale),
                     dict(q=q, k=k, v=v), [g])
    for got_t, name in zip(got, "qkv"):
        assert rel_err(got_t, ref[name]) <= 1e-12, name


# ---------------------------------------------------------------- compile --
def test_compile_fullgraph_with_mask_and_window(make):
    """The public function with a mask, a window and GQA traces into one graph;
    forward and gradients match eager."""
    torch._dynamo.reset()
    mask = torch.rand(9, 11, generator=torch.Generator().manual_seed(0)) > 0.2

    def f(q, k, v):
        return fusedseq.attention(q * 1.5, k, v.tanh(), attn_mask=mask, window=(4, 2)).relu()

    args = [make(2, 4, 9, 16, requires_grad=True), make(2, 2, 11, 16, requires_grad=True),
            make(2, 2, 11, 16, requires_grad=True)]
    g = make(2, 4, 9, 16)
    compiled = torch.compile(f, fullgraph=True)
    out_c = compiled(*args)
    grads_c = torch.autograd.grad(out_c, args, g)
    out_e = f(*args)
    grads_e = torch.autograd.grad(out_e, args, g)
    for a, b in zip((out_c, *grads_c), (out_e, *grads_e)):
        assert rel_err(a, b) <= 1e-6
    torch._dynamo.reset()


def test_compile_fullgraph_varlen(make):
    torch._dynamo.reset()
    q, k, v, cu_q, cu_k = _varlen(make, torch.float32, [3, 8, 5], [3, 8, 9], 4, 2, 16)

    def f(q, k, v):
        return fusedseq.attention_varlen(q, k, v, cu_q, cu_k, 8, 9, causal=True).sin()

    g = make(*q.shape)
    out_c = torch.compile(f, fullgraph=True)(q, k, v)
    grads_c = torch.autograd.grad(out_c, [q, k, v], g)
    out_e = f(q, k, v)
    grads_e = torch.autograd.grad(out_e, [q, k, v], g)
    for a, b in zip((out_c, *grads_c), (out_e, *grads_e)):
        assert rel_err(a, b) <= 1e-6
    torch._dynamo.reset()


def test_compile_fullgraph_raw_ops_with_dropout(make):
    """The raw ops with an explicit Philox key (how a compiled training step
    passes dropout through: the key is data, the mask regenerated)."""
    torch._dynamo.reset()
    q, k, v = make(2, 4, 9, 16), make(2, 2, 11, 16), make(2, 2, 11, 16)
    mask = torch.rand(2, 1, 1, 11, generator=torch.Generator().manual_seed(1)) > 0.3
    g = make(2, 4, 9, 16)

    def f(g, q, k, v):
        out, lse, lse_lo = raw_fwd(q, k, v, mask, 0.3, False, 0.25, (-1, -1), 5, 0)
        return out, raw_bwd(g.sin(), q, k, v, out, lse, lse_lo, mask, 0.3, False, 0.25, (-1, -1), 5, 0)

    got_out, got = torch.compile(f, fullgraph=True)(g, q, k, v)
    want_out, want = f(g, q, k, v)
    assert torch.equal(got_out, want_out)
    for a, b in zip(got, want):
        assert rel_err(a, b) <= 1e-6
    torch._dynamo.reset()


def test_compile_with_dropout_reproduces_eager(make):
    """The public function with dropout under torch.compile (one graph break
    to draw the Philox key from torch's generator): reproducible under
    torch.manual_seed, a fresh mask on the next call, a backward; and, with
    inductor drawing random numbers as eager does (fallback_random), the
    eager output itself, up to rounding."""
    torch._dynamo.reset()
    q = make(1, 2, 7, 8, requires_grad=True)

    def f(q):
        return fusedseq.attention(q, q.cos(), q, dropout_p=0.3).sin()

    compiled = torch.compile(f)
    torch.manual_seed(3)
    a = compiled(q)
    torch.manual_seed(3)
    assert torch.equal(a, compiled(q))
    assert not torch.equal(a, compiled(q))
    (g,) = torch.autograd.grad(a.sum(), [q])
    assert torch.isfinite(g).all()
    torch._dynamo.reset()
    with torch._inductor.config.patch(fallback_random=True):
        compiled = torch.compile(f)
        torch.manual_seed(4)
        a = compiled(q)
        torch.manual_seed(4)
        assert rel_err(a, f(q)) <= 1e-5  # the same mask (inductor's sin/cos round differently)
    torch._dynamo.reset()


# ---------------------------------------------------------------- autocast --
@pytest.mark.parametrize("autocast_dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_autocast_with_float_mask(autocast_dtype, make):
    """Under autocast the op runs in the autocast dtype; a float32 additive mask
    is cast with q, k and v, as SDPA's autocast rule does."""
    q, k, v = make(2, 4, 20, 32), make(2, 2, 25, 32), make(2, 2, 25, 32)
    mask = make(2, 1, 20, 25)
    with torch.autocast("cpu", dtype=autocast_dtype):
        out = fusedseq.attention(q, k, v, attn_mask=mask)
    assert out.dtype == autocast_dtype
    rounded = [t.to(autocast_dtype) for t in (q, k, v, mask)]
    ref = reference.attention(*(t.double() for t in rounded[:3]), attn_mask=rounded[3].double())
    base = torch.nn.functional.scaled_dot_product_attention(*rounded[:3], attn_mask=rounded[3], enable_gqa=True)
    assert_accurate(out, ref, autocast_dtype, baseline=base)


def test_autocast_varlen(make):
    q, k, v, cu_q, cu_k = _varlen(make, torch.float32, [4, 6], [5, 6], 2, 2, 16, requires_grad=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fusedseq.attention_varlen(q, k, v, cu_q, cu_k, 6, 6)
    assert out.dtype == torch.bfloat16
    ref = reference.attention_varlen(*(t.bfloat16().double() for t in (q, k, v)), cu_q, cu_k)
    assert rel_err(out, ref) <= 1e-2


def test_lse_plus_lse_lo_is_the_float64_lse(make):
    """lse is the LSE rounded once; lse + lse_lo carries what fp32 lost, to
    ~fp32 relative accuracy of the remainder (logits of order 1e5 here)."""
    q, k, v = make(1, 2, 6, 4, dtype=torch.float64), make(1, 2, 50, 4, dtype=torch.float64), make(
        1, 2, 50, 4, dtype=torch.float64)
    q = (q * 300).round()
    k = (k * 300).round()  # integer logits: exact in fp32 and fp64 alike
    q32, k32, v32 = q.float(), k.float(), v.float()
    out, lse, lse_lo = raw_fwd(q32, k32, v32, scale=1.0)
    ref = reference.attention_lse(q, k, scale=1.0)
    assert ref.abs().min() > 1e4
    exact_err = ((lse.double() + lse_lo.double()) - ref).abs().max().item()
    rounded_err = (lse.double() - ref).abs().max().item()
    assert exact_err <= 1e-6 * ref.abs().max().item() * 1e-4, (exact_err, rounded_err)
    assert torch.equal(lse, ref.float())  # lse itself is the correctly rounded LSE
    assert rel_err(out, torch_attention(q32, k32, v32, scale=1.0)) <= FP32_RTOL
