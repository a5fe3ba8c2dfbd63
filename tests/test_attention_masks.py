"""fusedseq.attention's attn_mask and window: every broadcast shape, bool and
additive masks, rows with every key masked, windows of every kind, against
the float64 reference (forward and gradients) and SDPA in low precision.

The shapes span several 48-query x 64-key tiles, so that tiles the mask or
the window hides entirely are skipped while their neighbours are not."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import fusedseq
from fusedseq import reference

from conftest import FP32_RTOL, check_against_reference, dtype_params, fwd_bwd, rel_err

# The ops these tests run: their emulated (and CUDA) variants need these ops' CUDA kernels.
pytestmark = pytest.mark.ops("attention_fwd", "attention_bwd")

B, HQ, HKV, NQ, NK, D = 2, 4, 2, 70, 150, 16


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def make_mask(shape, kind, seed=0, p_keep=0.7):
    """A mask of `shape`: bool (True = attend, about p_keep of them) or
    additive float64 (Gaussian, with -inf where the bool one is False)."""
    keep = torch.rand(shape, generator=_gen(seed)) < p_keep
    if kind == "bool":
        return keep
    add = torch.randn(shape, generator=_gen(seed + 1), dtype=torch.float64)
    return add.masked_fill(~keep, -math.inf) if kind == "float_inf" else add


def sdpa(q, k, v, attn_mask=None, scale=None):
    """SDPA in the inputs' dtype: the low-precision yardstick."""
    if attn_mask is not None and attn_mask.is_floating_point():
        attn_mask = attn_mask.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale, enable_gqa=True)


# Every way a mask broadcasts to (B, Hq, Nq, Nk).
MASK_SHAPES = [
    ("keys", (NK,)),
    ("qk", (NQ, NK)),
    ("1_qk", (1, NQ, NK)),
    ("keypad_B11K", (B, 1, 1, NK)),
    ("heads_H1K", (HQ, 1, NK)),
    ("rows_Q1", (NQ, 1)),
    ("per_batch_B1QK", (B, 1, NQ, NK)),
    ("full_BHQK", (B, HQ, NQ, NK)),
]


@pytest.mark.ops("attention_fwd", "attention_bwd")
@pytest.mark.parametrize("kind", ["bool", "float", "float_inf"])
@pytest.mark.parametrize("shape", MASK_SHAPES, ids=[s[0] for s in MASK_SHAPES])
def test_mask_shapes(shape, kind, device, make):
    mask = make_mask(shape[1], kind, seed=len(shape[1]))
    if kind != "bool":
        mask = mask.float()
    inputs = dict(q=make(B, HQ, NQ, D), k=make(B, HKV, NK, D), v=make(B, HKV, NK, D))
    check_against_reference(lambda **kw: fusedseq.attention(**kw, attn_mask=mask.to(device)),
                            lambda **kw: reference.attention(**kw, attn_mask=mask.double() if kind != "bool" else mask),
                            inputs, torch.float32, make, device=device)


@pytest.mark.ops("attention_fwd", "attention_bwd")
@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize("kind", ["bool", "float_inf"])
def test_mask_dtypes(kind, dtype, device, make):
    """Every input dtype, the additive mask in q's dtype (as SDPA takes it)."""
    mask = make_mask((B, 1, NQ, NK), kind, seed=3)
    mask = mask if kind == "bool" else mask.to(dtype)
    inputs = dict(q=make(B, HQ, NQ, D), k=make(B, HKV, NK, D), v=make(B, HKV, NK, D))
    ref_mask = mask if kind == "bool" else mask.double()
    check_against_reference(lambda **kw: fusedseq.attention(**kw, attn_mask=mask.to(device)),
                            lambda **kw: reference.attention(**kw, attn_mask=ref_mask), inputs, dtype, make,
                            baseline=lambda **kw: sdpa(**kw, attn_mask=mask), device=device)


def test_float32_mask_with_low_precision_inputs(make):
    """SDPA takes a float32 additive mask for bf16 inputs; so do we, without rounding it to bf16."""
    mask = make_mask((NQ, NK), "float", seed=4).float()
    q, k, v = (make(B, HQ, NQ, D).bfloat16(), make(B, HKV, NK, D).bfloat16(), make(B, HKV, NK, D).bfloat16())
    out = fusedseq.attention(q, k, v, attn_mask=mask)
    ref = reference.attention(q.double(), k.double(), v.double(), attn_mask=mask.double())
    assert out.dtype == torch.bfloat16
    assert rel_err(out, ref) <= 2 * rel_err(sdpa(q, k, v, attn_mask=mask), ref) + 1e-3


def test_non_contiguous_masks(make):
    """Masks reach the kernel as views: transposed, strided, expanded."""
    base = make_mask((B, NK, NQ), "bool", seed=5)
    views = {
        "transposed": base.transpose(-1, -2).unsqueeze(1),                       # (B, 1, NQ, NK), key stride != 1
        "strided": make_mask((B, 1, 2 * NQ, NK), "bool", seed=6)[:, :, ::2],    # every other query row
        "expanded": make_mask((1, 1, 1, NK), "bool", seed=7).expand(B, HQ, NQ, NK),  # stride 0 everywhere but keys
    }
    q, k, v = make(B, HQ, NQ, D, dtype=torch.float64), make(B, HKV, NK, D, dtype=torch.float64), make(
        B, HKV, NK, D, dtype=torch.float64)
    for name, mask in views.items():
        assert not mask.is_contiguous(), name
        out = fusedseq.attention(q, k, v, attn_mask=mask)
        assert rel_err(out, reference.attention(q, k, v, attn_mask=mask)) <= 1e-12, name


# --------------------------------------------------------- masked rows --
@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize("kind", ["bool", "float_inf"])
def test_fully_masked_rows_give_zeros_and_zero_gradients(kind, dtype, make):
    """Rows whose every key is masked (whole query rows, whole heads, a whole
    batch element): output zeros, LSE -inf, gradients zero, never NaN; the
    other rows are exact."""
    keep = torch.rand(B, HQ, NQ, NK, generator=_gen(8)) < 0.6
    keep[0, 1, 5] = False          # one row
    keep[1, :, 40:48] = False      # rows 40..47 of every head (inside one 48-row tile)
    keep[1, 3] = False             # a whole head
    keep[0, 2, :, :64] = False     # the first key tile of a head, for every row (a skipped tile)
    mask = keep if kind == "bool" else torch.zeros(keep.shape, dtype=dtype).masked_fill(~keep, -math.inf)
    q, k, v = (make(B, HQ, NQ, D, dtype=dtype, requires_grad=True), make(B, HKV, NK, D, dtype=dtype, requires_grad=True),
               make(B, HKV, NK, D, dtype=dtype, requires_grad=True))
    out, lse = fusedseq.attention_with_lse(q, k, v, attn_mask=mask)
    g = make(B, HQ, NQ, D, dtype=dtype)
    dq, dk, dv = torch.autograd.grad(out, [q, k, v], g)
    empty = ~keep.any(-1)  # (B, HQ, NQ)
    assert empty.sum() == 1 + 4 * 8 + NQ - 8
    for t in (out, dq, dk, dv):
        assert torch.isfinite(t).all()
    assert torch.equal(out[empty], torch.zeros_like(out[empty]))
    assert torch.equal(dq[empty], torch.zeros_like(dq[empty]))
    assert torch.isneginf(lse[empty]).all() and torch.isfinite(lse[~empty]).all()
    ref_mask = mask if kind == "bool" else mask.double()
    ref_out, ref_g = fwd_bwd(lambda **kw: reference.attention(**kw, attn_mask=ref_mask), dict(q=q, k=k, v=v), [g],
                             dtype=torch.float64)
    tol = {torch.float64: 1e-12, torch.float32: FP32_RTOL}.get(dtype, 2e-2)
    assert rel_err(out, ref_out[0]) <= tol
    for got, n in zip((dq, dk, dv), "qkv"):
        assert rel_err(got, ref_g[n]) <= tol, n


def test_every_key_masked_everywhere(make):
    q, k, v = (make(1, 2, 5, 8, requires_grad=True), make(1, 2, 7, 8, requires_grad=True),
               make(1, 2, 7, 8, requires_grad=True))
    mask = torch.zeros(5, 7, dtype=torch.bool)
    out = fusedseq.attention(q, k, v, attn_mask=mask)
    assert torch.equal(out, torch.zeros_like(out))
    for gr in torch.autograd.grad(out.sum(), [q, k, v]):
        assert torch.equal(gr, torch.zeros_like(gr))


def test_masked_nan_key_does_not_reach_the_output(make):
    """A bool mask removes a key outright (SDPA's masked_fill): a NaN key or
    value that no query may see, inside a partly visible tile or in a skipped
    one, must not poison anything."""
    q, k, v = make(1, 2, 10, 8), make(1, 2, 150, 8), make(1, 2, 150, 8)
    k[0, 0, 3, 2] = math.nan     # in the first key tile, which others keep visible
    k[0, 1, 100, 0] = math.nan   # in the second tile, masked as a whole
    mask = torch.ones(1, 1, 1, 150, dtype=torch.bool)
    mask[..., 3] = False
    mask[..., 64:128] = False
    out = fusedseq.attention(q, k, v, attn_mask=mask)
    assert torch.isfinite(out).all()
    assert rel_err(out, reference.attention(q.double(), k.double(), v.double(), attn_mask=mask)) <= FP32_RTOL


def test_mask_gets_no_gradient(make):
    """Documented: a float mask that requires grad gets none (SDPA would give one)."""
    q, k, v = make(1, 2, 4, 8, requires_grad=True), make(1, 2, 6, 8), make(1, 2, 6, 8)
    mask = make(4, 6, requires_grad=True)
    fusedseq.attention(q, k, v, attn_mask=mask).sum().backward()
    assert q.grad is not None and mask.grad is None


# --------------------------------------------------------------- windows --
WINDOWS = [(0, 0), (3, 0), (0, 3), (2, 5), (-1, 4), (4, -1), (-1, -1), (70, 70), (10 ** 12, 10 ** 12), (1, 0)]


@pytest.mark.ops("attention_fwd", "attention_bwd")
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("Nq,Nk", [(NQ, NK), (NK, NQ), (130, 130)])
@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: f"w{w[0]}_{w[1]}")
def test_windows(window, Nq, Nk, causal, device, make):
    """Query i sees keys i - left <= j <= i + right (top-left, as is_causal);
    with is_causal, also j <= i. Against the reference and against SDPA given
    the same window as an explicit mask."""
    q, k, v = (make(1, HQ, Nq, D, dtype=torch.float64), make(1, HKV, Nk, D, dtype=torch.float64),
               make(1, HKV, Nk, D, dtype=torch.float64))
    g = make(1, HQ, Nq, D, dtype=torch.float64)
    inputs = dict(q=q, k=k, v=v)
    out, grads = fwd_bwd(lambda **kw: fusedseq.attention(**kw, is_causal=causal, window=window), inputs, [g],
                         device=device)
    ref, ref_g = fwd_bwd(lambda **kw: reference.attention(**kw, is_causal=causal, window=window), inputs, [g])
    assert rel_err(out[0], ref[0]) <= 1e-12
    for n in "kv":  # dq is exactly zero on rows that see one key; k and v always have signal
        assert rel_err(grads[n], ref_g[n]) <= 1e-12, n
    assert (grads["q"].cpu() - ref_g["q"]).abs().max() <= 1e-12 * ref_g["q"].abs().max().clamp_min(1)
    visible = reference.attention_visible(Nq, Nk, causal, window)
    sdpa_out = F.scaled_dot_product_attention(q, k, v, attn_mask=visible, enable_gqa=True)
    assert rel_err(out[0], sdpa_out) <= 1e-12


@pytest.mark.parametrize("dtype", dtype_params())
def test_window_with_mask_and_gqa(dtype, make):
    window = (20, 7)
    mask = make_mask((B, 1, 1, NK), "bool", seed=9, p_keep=0.8)
    inputs = dict(q=make(B, HQ, NQ, D), k=make(B, HKV, NK, D), v=make(B, HKV, NK, D))
    combined = mask & reference.attention_visible(NQ, NK, False, window)
    check_against_reference(lambda **kw: fusedseq.attention(**kw, attn_mask=mask, window=window),
                            lambda **kw: reference.attention(**kw, attn_mask=mask, window=window), inputs, dtype,
                            make, baseline=lambda **kw: sdpa(**kw, attn_mask=combined))


def test_window_rows_that_see_nothing(make):
    """With Nq > Nk, a causal window can leave late rows with no key at all
    only when the window is right-bounded past the keys; here (0, 0) on
    Nq > Nk: rows i >= Nk see nothing and give zeros."""
    q, k, v = make(1, 2, 20, 8, requires_grad=True), make(1, 2, 12, 8, requires_grad=True), make(
        1, 2, 12, 8, requires_grad=True)
    out = fusedseq.attention(q, k, v, window=(0, 0))
    assert torch.equal(out[:, :, 12:], torch.zeros_like(out[:, :, 12:]))
    dq, dk, dv = torch.autograd.grad(out.sum(), [q, k, v])
    assert torch.equal(dq[:, :, 12:], torch.zeros_like(dq[:, :, 12:]))
    # each row i < 12 sees exactly key i: the output is v itself
    assert rel_err(out[:, :, :12], v) <= FP32_RTOL


def test_causal_alias_and_is_causal_agree(make):
    q, k, v = make(1, 2, 9, 8), make(1, 2, 11, 8), make(1, 2, 11, 8)
    assert torch.equal(fusedseq.attention(q, k, v, causal=True), fusedseq.attention(q, k, v, is_causal=True))
    assert torch.equal(fusedseq.attention(q, k, v, causal=True), fusedseq.attention(q, k, v, is_causal=True,
                                                                                     causal=True))
