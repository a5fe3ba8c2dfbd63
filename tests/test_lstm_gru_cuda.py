"""The LSTM and GRU ops' CUDA kernels (csrc/cuda/gated_rnn.cu): the
recurrence forward and backward on both of its paths (the persistent
cooperative kernel, and one launch per step), on the emulator in CI and on a
GPU where there is one.

test_lstm_gru.py runs on these kernels too (its ``emulated`` variants, under
the automatic path choice: persistent wherever the weights fit, which is every
emulated shape there but H=256 in fp64). Here each case forces a path, so
both are checked over the issue's odd sizes (T ∈ {1, 7, 40}, B ∈ {1, 3},
H ∈ {1, 17, 40}: one block, uneven splits, 8 blocks), I ≠ H, the bias
variants, given and missing states, and four dtypes, as a pairwise design:
every pair of values of two factors appears in some case (checked below).
Every case checks the forward and every gradient against the float64
reference, low precision against PyTorch's own path, with freed heap
poisoned first so an unwritten output element shows as NaN.
"""
from __future__ import annotations

import math

import pytest
import torch

from conftest import FP32_RTOL, check_against_reference, fwd_bwd, missing_pairs, nbytes, poison_heap, rel_err
from _gated import GRU, KINDS, LSTM, gated_weights, kind_params, state_tensors

pytestmark = pytest.mark.ops("lstm", "lstm_backward", "gru", "gru_backward")

KERNEL_DEVICES = [pytest.param("emulated", marks=pytest.mark.emulated), pytest.param("cuda", marks=pytest.mark.cuda)]
DTYPES = {"fp32": torch.float32, "fp64": torch.float64, "bf16": torch.bfloat16, "fp16": torch.float16}
BIAS = {"both": (True, True), "none": (False, False), "ih": (True, False), "hh": (False, True)}

# (T, B, H, I, bias, states given, dtype, path)
SEQ_CASES = [
    (7, 3, 17, 5, "ih", False, "fp16", "per_step"),
    (7, 3, 1, 2, "none", False, "fp32", "persistent"),
    (40, 1, 40, 9, "hh", False, "bf16", "persistent"),
    (1, 3, 1, 6, "both", False, "fp64", "per_step"),
    (40, 1, 17, 4, "both", False, "fp16", "persistent"),
    (40, 1, 17, 12, "none", True, "fp64", "per_step"),
    (7, 3, 17, 33, "both", True, "bf16", "persistent"),
    (7, 1, 1, 3, "hh", True, "fp16", "per_step"),
    (7, 3, 17, 7, "hh", False, "fp64", "persistent"),
    (40, 3, 1, 8, "ih", False, "fp32", "persistent"),
    (1, 1, 40, 20, "ih", True, "bf16", "per_step"),
    (1, 3, 1, 5, "none", True, "bf16", "persistent"),
    (1, 1, 17, 6, "hh", False, "fp32", "persistent"),
    (1, 1, 40, 3, "none", True, "fp16", "per_step"),
    (1, 3, 40, 9, "both", True, "fp32", "per_step"),
    (7, 1, 40, 33, "ih", False, "fp64", "persistent"),
]
SEQ_FACTORS = ("T", "B", "H", "I", "bias", "states", "dtype", "path")


def seq_id(c):
    T, B, H, I, bias, states, dt, path = c
    return f"T{T}_B{B}_H{H}_I{I}_b{bias}_{'states' if states else 'nostates'}_{dt}_{path}"


@pytest.mark.cpu_kernels_only("checks the test grid, runs no kernel")
def test_grid_is_pairwise():
    """Every pair of values of two factors occurs in some case (I ≠ H everywhere)."""
    levels = {"T": {1, 7, 40}, "B": {1, 3}, "H": {1, 17, 40}, "bias": set(BIAS), "states": {True, False},
              "dtype": set(DTYPES), "path": {"persistent", "per_step"}}
    assert all(c[SEQ_FACTORS.index("I")] != c[SEQ_FACTORS.index("H")] for c in SEQ_CASES)
    missing = missing_pairs(SEQ_CASES, SEQ_FACTORS, levels)
    assert not missing, missing


@pytest.fixture
def rnn_path(monkeypatch):
    """FUSEDSEQ_CUDA_RNN_PATH for the test (the bindings read it per call)."""
    def set_path(path: str):
        monkeypatch.setenv("FUSEDSEQ_CUDA_RNN_PATH", path)
    return set_path


@pytest.mark.parametrize("device", KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("case", SEQ_CASES, ids=[seq_id(c) for c in SEQ_CASES])
@pytest.mark.parametrize("kind", kind_params())
def test_sequence_grid(kind, case, device, make, rnn_path):
    T, B, H, I, bias, states_given, dt, path = case
    dtype = DTYPES[dt]
    rnn_path(path)
    w_ih, w_hh, b_ih, b_hh = gated_weights(make, I, H, kind.gates, bias=BIAS[bias])
    states = state_tensors(make, kind, (B, H)) if states_given else dict.fromkeys(kind.states)
    inputs = dict(x=make(T, B, I, dtype=torch.float64), **states, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    G = kind.gates
    shapes = [(T, B, H), (B, H), (T, B, I), (G * H, I), (G * H, H), (G * H,), (T, B, 4 * H), (2, B, G * H)]
    poison_heap(*[nbytes(s, d) for s in shapes for d in {dtype, torch.float32}])
    outs, grads = check_against_reference(kind.seq, kind.seq_ref, inputs, dtype, make, baseline=kind.seq_torch,
                                          device=device, out_names=kind.seq_outputs)
    assert torch.equal(outs[1], outs[0][-1])
    assert set(grads) == {n for n, t in inputs.items() if t is not None}


def _fwd_bwd_all(kind, make, dtype, T, B, I, H):
    w = gated_weights(make, I, H, kind.gates)
    inputs = dict(x=make(T, B, I, dtype=torch.float64), **state_tensors(make, kind, (B, H)),
                  **dict(zip(("w_ih", "w_hh", "b_ih", "b_hh"), w)))
    cots = [make(T, B, H, dtype=torch.float64)] + [make(B, H, dtype=torch.float64) for _ in kind.states]
    return inputs, cots


@pytest.mark.parametrize("device", KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("kind", kind_params())
def test_paths_agree_bit_for_bit(kind, dtype, device, make, rnn_path):
    """The persistent kernel and the per-step one run the same step code in
    the same order: every output and gradient is identical (8 blocks of 5
    units on the emulator's 8 SMs)."""
    inputs, cots = _fwd_bwd_all(kind, make, dtype, 5, 3, 6, 40)
    runs = []
    for path in ("persistent", "per_step"):
        rnn_path(path)
        outs, grads = fwd_bwd(kind.seq, inputs, cots, dtype=dtype, device=device)
        runs.append((*outs, *grads.values()))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device", KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("kind", kind_params())
def test_auto_falls_back_where_weights_do_not_fit(kind, device, make, rnn_path):
    """Gate rows of W_hh too large for the chip's shared memory run per step
    under `auto`, and a forced persistent path refuses (never hangs)."""
    T, B, I = 2, 1, 3
    H = 400 if device == "cpu" else 4096  # the emulator plays 8 SMs of 227 KB: fp32 gate rows of 400 do not fit
    inputs, cots = _fwd_bwd_all(kind, make, torch.float32, T, B, I, H)
    rnn_path("persistent")
    with pytest.raises(RuntimeError, match="persistent path was forced but cannot run"):
        fwd_bwd(kind.seq, inputs, dtype=torch.float32, device=device)
    results = {}
    for path in ("auto", "per_step"):
        rnn_path(path)
        results[path] = fwd_bwd(kind.seq, inputs, cots, dtype=torch.float32, device=device)
    auto, per_step = results["auto"], results["per_step"]
    for a, b in zip((*auto[0], *auto[1].values()), (*per_step[0], *per_step[1].values())):
        assert torch.equal(a, b)
    ref_outs, ref_grads = fwd_bwd(kind.seq_ref, inputs, cots)
    for a, r in zip(auto[0], ref_outs):
        assert rel_err(a, r) <= FP32_RTOL
    for n, g in auto[1].items():
        assert rel_err(g, ref_grads[n]) <= FP32_RTOL, n


@pytest.mark.parametrize("device", KERNEL_DEVICES, indirect=True)
def test_bad_path_variable(device, make, rnn_path):
    rnn_path("sometimes")
    for kind in KINDS:
        inputs, _ = _fwd_bwd_all(kind, make, torch.float32, 2, 1, 3, 4)
        with pytest.raises(ValueError, match="FUSEDSEQ_CUDA_RNN_PATH"):
            fwd_bwd(kind.seq, inputs, dtype=torch.float32, device=device)


@pytest.mark.parametrize("device", KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("kind", kind_params())
def test_nan_in_x_stays_in_its_batch_row(kind, device, make, rnn_path):
    """Across blocks of the persistent kernel a NaN reaches only its own batch row, forward and backward."""
    rnn_path("persistent")
    T, B, I, H = 6, 3, 4, 40
    inputs, cots = _fwd_bwd_all(kind, make, torch.float32, T, B, I, H)
    inputs["x"][2, 1, 0] = math.nan
    outs, grads = fwd_bwd(kind.seq, inputs, cots, grad_of=["x"], dtype=torch.float32, device=device)
    out = outs[0]
    assert out[2:, 1].isnan().all()
    clean = torch.ones(T, B, dtype=torch.bool, device=out.device)
    clean[2:, 1] = False
    assert torch.isfinite(out[clean]).all()
    dx = grads["x"]  # every step of its row sees NaN gates (steps >= 2) or their gradients (steps < 2)
    assert dx[:, 1].isnan().all() and torch.isfinite(dx[:, [0, 2]]).all()


# GPU only (too large for the emulator): long sequences at widths that fill
# the chip, every gradient over T = 1000 against float64.
LONG = [pytest.param(kind, H, path, dtype, id=f"{kind.name}_H{H}_{path}_{str(dtype)[6:]}",
                     marks=pytest.mark.skip_emulated("T=1000 at H >= 512"))
        for kind, H, path, dtype in ((LSTM, 1024, "persistent", torch.float32), (LSTM, 512, "per_step", torch.bfloat16),
                                     (GRU, 1024, "persistent", torch.bfloat16), (GRU, 512, "per_step", torch.float32))]


@pytest.mark.parametrize("device", KERNEL_DEVICES, indirect=True)
@pytest.mark.parametrize("kind,H,path,dtype", LONG)
def test_long_sequences(kind, H, path, dtype, device, make, rnn_path):
    """(The float64 reference runs on the host: tens of seconds per case.)"""
    rnn_path(path)
    T, B, I = 1000, 8, 256
    w = gated_weights(make, I, H, kind.gates)
    inputs = dict(x=make(T, B, I, dtype=torch.float64), **state_tensors(make, kind, (B, H)),
                  **dict(zip(("w_ih", "w_hh", "b_ih", "b_hh"), w)))
    check_against_reference(kind.seq, kind.seq_ref, inputs, dtype, make, baseline=kind.seq_torch, device=device,
                            out_names=kind.seq_outputs)


@pytest.mark.emulated
@pytest.mark.cpu_kernels_only("calls the emulated ops directly")
@pytest.mark.parametrize("kind", kind_params())
def test_bad_input_names_the_argument(kind, make):
    """The CUDA bindings run the CPU bindings' checks (gated_common.h) before
    any kernel: a wrong gate-row count, mismatched states or a wrong saved
    workspace is a ValueError naming the argument."""
    import fusedseq.emulated
    if not fusedseq.emulated.available():
        pytest.skip("this build has no emulated CUDA kernels")
    ops = torch.ops.fusedseq_emulated
    T, B, I, H = 3, 2, 4, 5
    x, states = make(T, B, I), [make(B, H) for _ in kind.states]
    w_ih, w_hh, b_ih, b_hh = (t.float() for t in gated_weights(make, I, H, kind.gates))
    seq, cell = getattr(ops, kind.name), getattr(ops, kind.name + "_cell")
    with pytest.raises(ValueError, match="'w_hh'"):
        seq(x, *states, w_ih, w_hh[:-1], b_ih, b_hh)
    with pytest.raises(ValueError, match="'w_ih'"):
        cell(x[0], *states, w_ih[1:], w_hh, b_ih, b_hh)
    with pytest.raises(ValueError, match="'h0'"):
        seq(x, states[0][:1], *states[1:], w_ih, w_hh, b_ih, b_hh)
    with pytest.raises(ValueError, match="'b_ih'"):
        seq(x, *states, w_ih, w_hh, b_ih[:-1], b_hh)
    outs = seq(x, *states, w_ih, w_hh, b_ih, b_hh)
    gates = outs[-1]
    backward = getattr(ops, kind.name + "_backward")
    if kind is LSTM:
        out, cs, _ = outs
        args = lambda g: (out, cs, out, cs, g, x, *states, w_ih, w_hh)  # noqa: E731
    else:
        out, _ = outs
        args = lambda g: (out, out, g, x, *states, w_ih, w_hh)  # noqa: E731
    with pytest.raises(ValueError, match="'gates'"):
        backward(*args(gates[:, :, :-1]))
    backward(*args(gates))  # the same call with the right workspace runs
