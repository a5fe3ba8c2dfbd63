"""The self-test kernels (csrc/cuda/selftest/) through the mechanism every
CUDA op uses (csrc/bindings/cuda_ops.h): the same binding code, compiled into
the emulated library as torch.ops.fusedseq_selftest_emulated.* (CPU tensors,
kernels run by the host SIMT emulator) and into the CUDA extension as
torch.ops.fusedseq_selftest.* (CUDA tensors, on a GPU). Each is checked
against a float64 reference on fresh random inputs, outputs poisoned first."""
from __future__ import annotations

import pytest
import torch

import fusedseq

HALF = [pytest.param(torch.bfloat16, id="bf16"), pytest.param(torch.float16, id="fp16")]
U = 2.0 ** -24  # fp32 unit roundoff


@pytest.fixture(params=[pytest.param("emulated", marks=pytest.mark.emulated),
                        pytest.param("cuda", marks=pytest.mark.cuda)])
def kernels(request):
    """(ops, device): the self-test ops and the device of their tensors."""
    if request.param == "emulated":
        if not fusedseq.emulated.available():
            pytest.skip("this build has no emulated library (FUSEDSEQ_EMULATED=OFF)")
        return torch.ops.fusedseq_selftest_emulated, "cpu"
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device available")
    if not fusedseq.build_info()["cuda_compiled"]:
        pytest.skip("this fusedseq build has no CUDA kernels")
    return torch.ops.fusedseq_selftest, "cuda"


def assert_dot_accurate(out, ref, scale, k, what):
    """Elementwise |out - ref| <= 2 k u sum|a_i b_i|: the bound for a k-term
    fp32 dot product in any summation order (tensor cores included)."""
    out = out.double().cpu()
    err = (out - ref).abs()
    allowed = 2 * k * U * scale + 1e-30
    bad = (err > allowed) | out.isnan()
    assert not bad.any(), (f"{what}: {int(bad.sum())} of {out.numel()} elements wrong; worst error "
                           f"{(err / allowed).nan_to_num(float('inf')).max().item():.3g}x the bound")


# ------------------------------------------------------------------ GEMM --
GEMM_SHAPES = [(64, 64, 32), (128, 128, 96), (37, 64, 96), (64, 40, 128), (64, 64, 100), (77, 53, 131), (5, 9, 3),
               (1, 1, 1), (130, 70, 200)]


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("M,N,K", GEMM_SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in GEMM_SHAPES])
def test_gemm_tensor_cores(kernels, make, dtype, M, N, K):
    ops, device = kernels
    a, b = make(M, K, dtype=dtype, device=device), make(K, N, dtype=dtype, device=device)
    c = ops.gemm(a, b)
    assert c.shape == (M, N) and c.dtype == torch.float32 and c.device.type == device
    a64, b64 = a.double().cpu(), b.double().cpu()
    assert_dot_accurate(c, a64 @ b64, a64.abs() @ b64.abs(), K, "C = A B")


@pytest.mark.parametrize("layout", ["row-padded view", "transposed view", "offset start"])
def test_gemm_takes_strided_inputs(kernels, make, layout):
    """Rows 16-byte aligned are read in place; anything else is copied to
    padded rows by the binding: the results are the same."""
    ops, device = kernels
    M, N, K = 45, 24, 70
    if layout == "row-padded view":
        a = make(M, 72, dtype=torch.bfloat16, device=device)[:, :K]
        b = make(K, 32, dtype=torch.bfloat16, device=device)[:, :N]
    elif layout == "transposed view":
        a = make(K, M, dtype=torch.bfloat16, device=device).t()
        b = make(N, K, dtype=torch.bfloat16, device=device).t()
    else:
        a = make(M * K + 3, dtype=torch.bfloat16, device=device)[3:].view(M, K)
        b = make(K, N, dtype=torch.bfloat16, device=device)
    a64, b64 = a.double().cpu(), b.double().cpu()
    assert_dot_accurate(ops.gemm(a, b), a64 @ b64, a64.abs() @ b64.abs(), K, layout)


SCHEDULES = [("round-robin", "wait"), ("warp0-ahead", "issue"), ("random", "wait"), ("random", "issue")]


@pytest.mark.emulated
@pytest.mark.parametrize("schedule,landing", SCHEDULES, ids=[f"{s}-{l}" for s, l in SCHEDULES])
def test_every_kernel_under_every_schedule(make, monkeypatch, schedule, landing):
    """The emulator reads its schedule at each launch: the same kernels, the
    same answers, whichever thread runs when."""
    if not fusedseq.emulated.available():
        pytest.skip("no emulated library in this build")
    monkeypatch.setenv("FUSEDSEQ_EMU_SCHEDULE", schedule)
    monkeypatch.setenv("FUSEDSEQ_EMU_CP_ASYNC", landing)
    monkeypatch.setenv("FUSEDSEQ_EMU_SEED", "12345")
    ops = torch.ops.fusedseq_selftest_emulated
    a, b = make(70, 72, dtype=torch.float16), make(72, 65, dtype=torch.float16)
    a64, b64 = a.double(), b.double()
    assert_dot_accurate(ops.gemm(a, b), a64 @ b64, a64.abs() @ b64.abs(), 72, "gemm")
    x = make(3, 200, scale=4.0)
    torch.testing.assert_close(ops.row_softmax(x).double(), torch.softmax(x.double(), -1), rtol=1e-5, atol=1e-7)
    w, h0 = make(64, 64, scale=0.2), make(2, 64)
    torch.testing.assert_close(ops.persistent_rnn(w, h0, 3)[-1].double(), rnn_reference(w, h0, 3)[-1],
                               rtol=0, atol=1e-5)


def test_bad_schedule_is_an_error(make, monkeypatch):
    if not fusedseq.emulated.available():
        pytest.skip("no emulated library in this build")
    monkeypatch.setenv("FUSEDSEQ_EMU_SCHEDULE", "sideways")
    with pytest.raises(RuntimeError, match="FUSEDSEQ_EMU_SCHEDULE must be round-robin, warp0-ahead or random"):
        torch.ops.fusedseq_selftest_emulated.row_softmax(make(2, 8))


# --------------------------------------------------------------- softmax --
@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 77), (4, 128), (2, 129), (5, 1000), (1, 4099)])
def test_row_softmax_shuffles(kernels, make, rows, cols):
    ops, device = kernels
    x = make(rows, cols, scale=5.0, device=device)
    y = ops.row_softmax(x)
    ref = torch.softmax(x.double().cpu(), -1)
    torch.testing.assert_close(y.double().cpu(), ref, rtol=1e-5, atol=1e-7)


def test_row_softmax_large_logits_do_not_overflow(kernels, make):
    ops, device = kernels
    x = make(2, 300, device=device) * 1e4
    y = ops.row_softmax(x).double().cpu()
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, torch.softmax(x.double().cpu(), -1), rtol=1e-5, atol=1e-7)


# ------------------------------------------------------- persistent RNN --
def rnn_reference(w, h0, steps):
    h, out = h0.double().cpu(), []
    for _ in range(steps):
        h = torch.tanh(h @ w.double().cpu().t())
        out.append(h)
    return torch.stack(out)


@pytest.mark.parametrize("B,H,steps", [(1, 8, 1), (2, 64, 5), (3, 128, 4), (2, 256, 3)])
def test_persistent_rnn_grid_barrier(kernels, make, B, H, steps):
    ops, device = kernels
    w, h0 = make(H, H, scale=1.5 / H ** 0.5, device=device), make(B, H, device=device)
    out = ops.persistent_rnn(w, h0, steps)
    assert out.shape == (steps, B, H)
    # each step: an H-term dot product (bounded as above), then tanh (1-Lipschitz)
    ref = rnn_reference(w, h0, steps)
    torch.testing.assert_close(out.double().cpu(), ref, rtol=0, atol=steps * 2 * H * U * 8)


# ------------------------------------------------------------ fragments --
def ldmatrix_codes_from_the_isa(count: int, trans: bool) -> torch.Tensor:
    """What the PTX ISA says each lane receives (codes m * 64 + row * 8 + col
    of matrix m): register m holds (row lane/4, cols 2(lane%4) + h), or with
    .trans (rows 2(lane%4) + h, col lane/4)."""
    out = torch.full((32, 4, 2), -1, dtype=torch.int32)
    for lane in range(32):
        for m in range(count):
            for h in range(2):
                r, c = (2 * (lane % 4) + h, lane // 4) if trans else (lane // 4, 2 * (lane % 4) + h)
                out[lane, m, h] = m * 64 + r * 8 + c
    return out


@pytest.mark.parametrize("count", [1, 2, 4])
@pytest.mark.parametrize("trans", [False, True], ids=["plain", "trans"])
def test_ldmatrix_fragment_probe(kernels, count, trans):
    """On a GPU this is the hardware's own answer; in the emulator, the
    emulator's (the CuTe check covers the same maps independently)."""
    ops, device = kernels
    got = ops.ldmatrix_probe(torch.empty(1, device=device), count, trans).cpu()
    assert torch.equal(got, ldmatrix_codes_from_the_isa(count, trans))


@pytest.mark.parametrize("dtype", HALF)
def test_mma_fragment_probe(kernels, make, dtype):
    ops, device = kernels
    a, b, c = make(16, 16, dtype=dtype, device=device), make(16, 8, dtype=dtype, device=device), make(16, 8, device=device)
    d = ops.mma_probe(a, b, c)
    a64, b64, c64 = a.double().cpu(), b.double().cpu(), c.double().cpu()
    assert_dot_accurate(d, a64 @ b64 + c64, a64.abs() @ b64.abs() + c64.abs(), 17, "D = A B + C")


# ------------------------------------------------------------ bad input --
def test_bad_input_names_the_argument(kernels, make):
    ops, device = kernels
    a = make(8, 8, dtype=torch.bfloat16, device=device)
    with pytest.raises(TypeError, match=r"gemm: argument 'a' must be bfloat16 or float16, got float32"):
        ops.gemm(a.float(), a)
    with pytest.raises(TypeError, match=r"argument 'b' must have the dtype of 'a'"):
        ops.gemm(a, a.half())
    with pytest.raises(ValueError, match=r"argument 'b' must have shape \(K, N\) with K = 8"):
        ops.gemm(a, make(9, 8, dtype=torch.bfloat16, device=device))
    with pytest.raises(ValueError, match=r"argument 'x' must not be empty"):
        ops.row_softmax(torch.empty(2, 0, device=device))
    with pytest.raises(ValueError, match=r"H must be a multiple of the number of blocks"):
        ops.persistent_rnn(make(12, 12, device=device), make(1, 12, device=device), 2)
    with pytest.raises(ValueError, match=r"argument 'count' must be 1, 2 or 4"):
        ops.ldmatrix_probe(a, 3, False)


@pytest.mark.emulated
def test_emulated_ops_take_cpu_tensors_only(make):
    if not fusedseq.emulated.available():
        pytest.skip("no emulated library in this build")
    meta = torch.empty(4, 4, device="meta")
    with pytest.raises((TypeError, NotImplementedError)):
        torch.ops.fusedseq_selftest_emulated.row_softmax(meta)
