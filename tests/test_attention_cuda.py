"""The CUDA attention kernels (csrc/cuda/attention/): forward and backward
against the float64 reference, on the issue's shape grid. Each test runs on
the CPU kernel, on the CUDA kernel through the host SIMT emulator
("emulated", CPU tensors) and on a GPU where there is one ("cuda").

Low precision (bf16, fp16: the tensor-core kernels) is judged against
PyTorch's own SDPA in that dtype on the same rounded inputs: ≤ 2× its error
plus a 1e-3 floor, norm-wise and element by element (conftest). fp32 runs the
CUDA-core kernel, held to the fp32 bound (1e-5)."""
from __future__ import annotations

import pytest
import torch

import fusedseq
from fusedseq import reference

from conftest import (assert_accurate, check_against_reference, cuda_skip_reason, dtype_params, nbytes, poison_heap,
                      rel_err, torch_attention, with_views)

pytestmark = pytest.mark.ops("attention_fwd", "attention_bwd")

HALF = [torch.bfloat16, torch.float16]

# (B, Hq, Hkv, Nq, Nk, D, causal): the grid, B ∈ {1, 2}, Hq/Hkv ∈
# {1/1, 4/2}, Nq, Nk ∈ {1, 17, 64, 130} (Nq ≠ Nk too), D ∈ {32, 64, 128},
# D = 256 once, causal and not. Chosen so that every tile edge is crossed:
# 1 (a single row/key), 17 (a partial first tile), 64 (exactly one tile),
# 130 (two full tiles and a 2-row tail).
GRID = [
    (1, 1, 1, 1, 1, 32, False),
    (1, 1, 1, 1, 130, 64, True),
    (2, 4, 2, 17, 17, 64, True),
    (1, 4, 2, 17, 64, 128, False),
    (2, 1, 1, 64, 64, 32, True),
    (1, 4, 2, 64, 17, 32, True),     # Nq > Nk, causal: top-left, rows past Nk see every key
    (1, 1, 1, 130, 130, 128, True),
    (2, 4, 2, 130, 64, 64, False),
    (1, 4, 2, 64, 130, 32, True),
    (1, 1, 1, 130, 17, 128, False),
    (1, 4, 2, 17, 130, 256, True),
    # Three or more key tiles under full query tiles: a stage is refilled while
    # other warps could still read it (the refill barrier's case; a causal grid
    # alone never has it with every warp's rows in range).
    (1, 4, 2, 64, 130, 32, False),
    (1, 1, 1, 130, 130, 128, False),
    (1, 2, 1, 33, 130, 256, False),
]


def case_id(c):
    B, Hq, Hkv, Nq, Nk, D, causal = c
    return f"B{B}_H{Hq}x{Hkv}_Nq{Nq}_Nk{Nk}_D{D}" + ("_causal" if causal else "")


def inputs(make, B, Hq, Hkv, Nq, Nk, D):
    return dict(q=make(B, Hq, Nq, D), k=make(B, Hkv, Nk, D), v=make(B, Hkv, Nk, D))


@pytest.mark.parametrize("dtype", dtype_params(HALF))
@pytest.mark.parametrize("case", GRID, ids=case_id)
def test_forward_backward(case, dtype, device, make):
    B, Hq, Hkv, Nq, Nk, D, causal = case
    kw = dict(is_causal=causal, enable_gqa=True)
    poison_heap(*(nbytes((B, Hq, max(Nq, Nk), D), d) for d in (dtype, torch.float32)))
    check_against_reference(with_views(fusedseq.attention, **kw), with_views(reference.attention, is_causal=causal),
                            inputs(make, B, Hq, Hkv, Nq, Nk, D), dtype, make,
                            baseline=with_views(torch_attention, causal=causal), device=device)


FP32_GRID = [(2, 4, 2, 17, 64, 32, True), (1, 1, 1, 130, 33, 24, False), (1, 2, 1, 5, 70, 256, True)]


@pytest.mark.parametrize("case", FP32_GRID, ids=case_id)
def test_forward_backward_fp32(case, device, make):
    """fp32 runs on CUDA cores (attention_simt.cu), accurate to fp32."""
    B, Hq, Hkv, Nq, Nk, D, causal = case
    check_against_reference(with_views(fusedseq.attention, is_causal=causal, enable_gqa=True),
                            with_views(reference.attention, is_causal=causal), inputs(make, B, Hq, Hkv, Nq, Nk, D),
                            torch.float32, make, device=device)


@pytest.mark.parametrize("dtype", dtype_params(HALF))
@pytest.mark.parametrize("D", [17, 40, 80])
def test_head_dims_between_instantiations(D, dtype, device, make):
    """A D without its own instantiation runs padded in the next one up (17 -> 32,
    40 -> 64, 80 -> 96): its rows are not 16-byte multiples, so the binding
    copies them into padded rows first."""
    kw = dict(is_causal=True, enable_gqa=True)
    check_against_reference(with_views(fusedseq.attention, **kw), with_views(reference.attention, is_causal=True),
                            inputs(make, 1, 2, 1, 20, 33, D), dtype, make,
                            baseline=with_views(torch_attention, causal=True), device=device)


@pytest.mark.parametrize("dtype", dtype_params(HALF))
def test_non_contiguous_inputs(dtype, device, make):
    """(B, N, H, D) tensors transposed to (B, H, N, D), and a value tensor that
    is every other element of a wider one (non-unit last stride, copied)."""
    B, Hq, Hkv, Nq, Nk, D = 2, 4, 2, 40, 70, 64
    leaves = dict(q=make(B, Nq, Hq, D), k=make(B, Nk, Hkv, D), v=make(B, Hkv, Nk, 2 * D))
    t = lambda x: x.transpose(1, 2)  # noqa: E731
    views = {"q": t, "k": t, "v": lambda x: x[..., ::2]}
    assert not any(views[n](leaves[n]).is_contiguous() for n in views)
    kw = dict(is_causal=True)
    check_against_reference(with_views(fusedseq.attention, views, enable_gqa=True, **kw),
                            with_views(reference.attention, views, **kw), leaves, dtype, make,
                            baseline=with_views(torch_attention, views, causal=True), device=device)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", dtype_params(HALF))
def test_large_logits(dtype, causal, device, make):
    """Logits of ±1e4: no overflow, no NaN or Inf anywhere, forward or backward."""
    B, Hq, Hkv, Nq, Nk, D = 1, 2, 1, 33, 70, 64
    q, k, v = (make(B, Hq, Nq, D, scale=12.0), make(B, Hkv, Nk, D, scale=12.0), make(B, Hkv, Nk, D))
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    scale = 10.0  # logits of several 1e4
    assert reference.attention_scores(q.double(), k.double(), scale=scale).abs().max() > 1e4
    leaves = [t.to(device).requires_grad_() for t in (q, k, v)]
    out, lse = fusedseq.attention_with_lse(*leaves, is_causal=causal, scale=scale, enable_gqa=True)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    ref = reference.attention(q.double(), k.double(), v.double(), is_causal=causal, scale=scale)
    base = torch_attention(q, k, v, causal, scale)
    assert_accurate(out, ref, dtype, baseline=base)
    ref_lse = reference.attention_lse(q.double(), k.double(), is_causal=causal, scale=scale)
    assert rel_err(lse, ref_lse) <= 1e-5
    g = make(B, Hq, Nq, D, dtype=dtype)
    grads = torch.autograd.grad(fusedseq.attention(*leaves, is_causal=causal, scale=scale, enable_gqa=True),
                                leaves, g.to(device))
    assert all(torch.isfinite(t).all() for t in grads)


@pytest.mark.parametrize("dtype", dtype_params(HALF + [torch.float32]))
def test_lse_and_poisoned_outputs(dtype, device, make):
    """Every element written: outputs over NaN-filled heap chunks; keys past
    Nq under top-left causal attention are seen by no query, so their dK, dV
    are exact zeros; the LSE matches the reference."""
    B, Hq, Hkv, Nq, Nk, D = 2, 4, 2, 21, 45, 32
    q, k, v = (make(B, Hq, Nq, D, dtype=dtype, requires_grad=True), make(B, Hkv, Nk, D, dtype=dtype,
               requires_grad=True), make(B, Hkv, Nk, D, dtype=dtype, requires_grad=True))
    g = make(B, Hq, Nq, D, dtype=dtype)
    sizes = [nbytes(s, d) for s in [(B, Hq, Nq, D), (B, Hq, Nq), (B, Hkv, Nk, D)] for d in (dtype, torch.float32)]
    poison_heap(*sizes)
    out, lse = fusedseq.attention_with_lse(q, k, v, is_causal=True, enable_gqa=True)
    poison_heap(*sizes)
    dq, dk, dv = torch.autograd.grad(out, [q, k, v], g)
    for t in (out, lse, dq, dk, dv):
        assert torch.isfinite(t).all()
    assert torch.equal(dk[:, :, Nq:], torch.zeros_like(dk[:, :, Nq:]))
    assert torch.equal(dv[:, :, Nq:], torch.zeros_like(dv[:, :, Nq:]))
    ref_lse = reference.attention_lse(q.double(), k.double(), is_causal=True)
    assert rel_err(lse, ref_lse) <= 1e-5


@pytest.mark.parametrize("window", [(5, 0), (3, 7), (-1, 2)])
def test_window(window, device, make):
    """Sliding windows run on the CUDA kernel too (key tiles outside the window skipped)."""
    dtype = torch.bfloat16
    kw = dict(window=window, enable_gqa=True)
    check_against_reference(with_views(fusedseq.attention, **kw), with_views(reference.attention, window=window),
                            inputs(make, 1, 4, 2, 70, 90, 32), dtype, make,
                            baseline=with_views(_sdpa_window, window=window), device=device)


def _sdpa_window(q, k, v, window):
    """SDPA with the window as a boolean mask (PyTorch's own low-precision path)."""
    Nq, Nk = q.shape[-2], k.shape[-2]
    i, j = torch.arange(Nq)[:, None], torch.arange(Nk)[None, :]
    left, right = window
    ok = torch.ones(Nq, Nk, dtype=torch.bool)
    if left >= 0:
        ok &= j >= i - left
    if right >= 0:
        ok &= j <= i + right
    return torch_attention(q, k, v, attn_mask=ok.to(q.device))


def test_deterministic(device, make):
    """No atomics: dK, dV sum over the query heads of a group on chip and dQ
    is a second pass, so runs are bitwise equal."""
    q, k, v = (make(1, 4, 70, 32, dtype=torch.bfloat16, requires_grad=True),
               make(1, 2, 90, 32, dtype=torch.bfloat16, requires_grad=True),
               make(1, 2, 90, 32, dtype=torch.bfloat16, requires_grad=True))
    g = make(1, 4, 70, 32, dtype=torch.bfloat16)
    runs = []
    for _ in range(2):
        out = fusedseq.attention(q, k, v, is_causal=True, enable_gqa=True)
        runs.append((out, *torch.autograd.grad(out, [q, k, v], g)))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_what_cuda_refuses(device, make):
    """Dropout has no CUDA kernel yet: a NotImplementedError that names the
    argument (the CPU runs it); D > 256: a ValueError naming the supported head
    dims."""
    if device == "cpu" and not _emulated_active():
        pytest.skip("the CPU kernel supports these")
    q, k, v = make(1, 2, 8, 32, dtype=torch.bfloat16), make(1, 2, 8, 32, dtype=torch.bfloat16), make(
        1, 2, 8, 32, dtype=torch.bfloat16)
    with pytest.raises(NotImplementedError, match="dropout_p"):
        fusedseq.attention(q, k, v, dropout_p=0.5)
    big = make(1, 1, 4, 264, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="32, 64, 96, 128, 256"):
        fusedseq.attention(big, big, big)


def _emulated_active() -> bool:
    """Whether torch.ops.fusedseq.attention_fwd on CPU tensors runs the emulated CUDA kernel right now."""
    q = torch.zeros(1, 1, 1, 300, dtype=torch.bfloat16)
    try:
        torch.ops.fusedseq.attention_fwd(q, q, q, None, 0.0, False, 1.0, -1, -1, 0, 0)
    except ValueError:
        return True
    return False


# ------------------------------------------------------------- GPU only --
def _cuda_only():
    reason = cuda_skip_reason(("attention_fwd", "attention_bwd"))
    if reason:
        pytest.skip(reason)


LARGE = [(1, 2, 1, 4097, 4097, 64, True), (1, 2, 2, 1000, 4097, 128, False), (2, 4, 2, 2049, 513, 256, True)]


@pytest.mark.cuda
@pytest.mark.skip_emulated("GPU only")
@pytest.mark.parametrize("dtype", dtype_params(HALF))
@pytest.mark.parametrize("case", LARGE, ids=case_id)
def test_large_shapes_on_gpu(case, dtype, make):
    """Up to 4097 queries and keys (too large for the emulator)."""
    _cuda_only()
    B, Hq, Hkv, Nq, Nk, D, causal = case
    check_against_reference(with_views(fusedseq.attention, is_causal=causal, enable_gqa=True),
                            with_views(reference.attention, is_causal=causal), inputs(make, B, Hq, Hkv, Nq, Nk, D),
                            dtype, make, baseline=with_views(torch_attention, causal=causal), device="cuda")


@pytest.mark.cuda
@pytest.mark.skip_emulated("GPU only")
@pytest.mark.parametrize("dtype", dtype_params(HALF + [torch.float32]))
def test_opcheck_and_compile_on_gpu(dtype, make):
    """torch.library.opcheck on the CUDA kernels, and torch.compile(fullgraph=True) through them."""
    _cuda_only()
    q, k, v = (make(2, 4, 33, 64, dtype=dtype, device="cuda"), make(2, 2, 47, 64, dtype=dtype, device="cuda"),
               make(2, 2, 47, 64, dtype=dtype, device="cuda"))
    args = (q, k, v, None, 0.0, True, 0.125, -1, -1, 0, 0)
    torch.library.opcheck(torch.ops.fusedseq.attention_fwd.default, args)
    out, lse, lse_lo = torch.ops.fusedseq.attention_fwd(*args)
    g = make(*out.shape, dtype=dtype, device="cuda")
    torch.library.opcheck(torch.ops.fusedseq.attention_bwd.default,
                          (g, q, k, v, out, lse, lse_lo, None, 0.0, True, 0.125, -1, -1, 0, 0))
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    fn = torch.compile(lambda q, k, v: fusedseq.attention(q, k, v, is_causal=True, enable_gqa=True), fullgraph=True)
    out_c = fn(*leaves)
    assert torch.equal(out_c.detach(), fusedseq.attention(q, k, v, is_causal=True, enable_gqa=True))
    grads = torch.autograd.grad(out_c, leaves, g)
    assert all(torch.isfinite(t).all() for t in grads)
