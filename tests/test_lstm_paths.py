"""The CPU LSTM's three ways of running its side products (the input
projection, dx and, on up to two threads, the weight gradients) beside the
recurrence, chosen by FUSEDSEQ_CPU_RNN_PATH: `pipeline` (one thread steps,
the other projects ahead / computes dx and dW behind, cpu/step_pipeline.h),
`split` (every step and product split over threads) and `aten` (ATen's
products, split steps). They must agree: pipeline and split run the same
tiles in the same order per element, so bit for bit; aten to fp32 rounding.
Two threads, so the pipeline's threads really run at once."""
from __future__ import annotations

import pytest
import torch

import fusedseq
import fusedseq.reference

from conftest import FP32_RTOL, rel_err

pytestmark = pytest.mark.usefixtures("one_thread")  # restores the thread count; the tests set two

PATHS = ["pipeline", "split", "aten"]


def lstm_run(make, T, B, I, H, cot_seed_inputs):
    """Forward and every gradient of fusedseq.lstm (fp32) on fixed inputs."""
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, g_out, g_h, g_c = cot_seed_inputs
    leaves = [t.clone().requires_grad_() for t in (x, h0, c0, w_ih, w_hh, b_ih, b_hh)]
    out, (h_n, c_n) = fusedseq.lstm(leaves[0], (leaves[1], leaves[2]), *leaves[3:])
    grads = torch.autograd.grad((out, h_n, c_n), leaves, (g_out, g_h, g_c))
    return [out, h_n, c_n, *grads]


def inputs(make, T, B, I, H, dtype=torch.float32):
    ts = [make(T, B, I), make(B, H), make(B, H), make(4 * H, I) * 0.2, make(4 * H, H) * 0.2, make(4 * H),
          make(4 * H), make(T, B, H), make(B, H), make(B, H)]
    return [t.to(dtype) for t in ts]


# Chunks of 128 // B steps: T a multiple of it, not, and shorter than one;
# I = H (balanced), I >> H (the recurrence thread helps with the projection),
# I << H (the dx worker waits for the steps); B > 128 (a chunk is one step);
# I past 256 (two column blocks of dW_ih, cpu/weight_grad_chunks.h).
SHAPES = [(24, 16, 64, 64), (37, 16, 96, 80), (5, 16, 40, 24), (60, 5, 300, 16), (30, 3, 7, 72), (1, 1, 3, 2),
          (3, 130, 20, 17)]


@pytest.mark.parametrize("T,B,I,H", SHAPES, ids=[f"T{s[0]}_B{s[1]}_I{s[2]}_H{s[3]}" for s in SHAPES])
def test_paths_agree_on_two_threads(T, B, I, H, make, monkeypatch):
    torch.set_num_threads(2)
    data = inputs(make, T, B, I, H)
    runs = {}
    for path in PATHS:
        monkeypatch.setenv("FUSEDSEQ_CPU_RNN_PATH", path)
        runs[path] = lstm_run(make, T, B, I, H, data)
    ref = lstm_run(make, T, B, I, H, [t.double() for t in data])
    names = ["output", "h_n", "c_n", "x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh"]
    for name, p, s, a, r in zip(names, runs["pipeline"], runs["split"], runs["aten"], ref):
        assert torch.equal(p, s), f"{name}: pipeline and split differ"
        assert rel_err(p, r) <= FP32_RTOL, f"{name}: pipeline vs float64"
        assert rel_err(a, r) <= FP32_RTOL, f"{name}: aten vs float64"


def test_pipeline_is_repeatable(make, monkeypatch):
    """Which thread computes which chunk varies from run to run (the chunks are
    claimed at run time); the numbers must not."""
    torch.set_num_threads(2)
    monkeypatch.setenv("FUSEDSEQ_CPU_RNN_PATH", "pipeline")
    data = inputs(make, 40, 8, 48, 48)
    first = lstm_run(make, 40, 8, 48, 48, data)
    for _ in range(4):
        for a, b in zip(first, lstm_run(make, 40, 8, 48, 48, data)):
            assert torch.equal(a, b)


def test_pipeline_on_one_thread(make, monkeypatch):
    """One thread runs both tasks in turn (the recurrence claims every chunk
    itself; in the backward the leftovers run after the last step)."""
    data = inputs(make, 20, 4, 12, 10)
    monkeypatch.setenv("FUSEDSEQ_CPU_RNN_PATH", "pipeline")
    one = lstm_run(make, 20, 4, 12, 10, data)
    monkeypatch.setenv("FUSEDSEQ_CPU_RNN_PATH", "split")
    for a, b in zip(one, lstm_run(make, 20, 4, 12, 10, data)):
        assert torch.equal(a, b)


def test_bad_path_variable(make, monkeypatch):
    monkeypatch.setenv("FUSEDSEQ_CPU_RNN_PATH", "sometimes")
    x, h0, c0 = make(3, 2, 4), make(2, 5), make(2, 5)
    w_ih, w_hh = make(20, 4), make(20, 5)
    with pytest.raises(ValueError, match="FUSEDSEQ_CPU_RNN_PATH"):
        fusedseq.lstm(x, (h0, c0), w_ih, w_hh)


def test_double_keeps_aten_products(make, monkeypatch):
    """float64 never takes the fp32 tiles' side products; every path gives the
    same bits there."""
    data = inputs(make, 6, 3, 5, 4, torch.float64)
    runs = []
    for path in PATHS:
        monkeypatch.setenv("FUSEDSEQ_CPU_RNN_PATH", path)
        runs.append(lstm_run(make, 6, 3, 5, 4, data))
    for a, b, c in zip(*runs):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_weight_grads_same_bits_on_one_and_two_threads(make, monkeypatch):
    """Each column block of dW is summed chunk after chunk in the order the
    steps release them, whichever thread runs a chunk (SideWork's ordered
    streams): one thread and two give the same bits, every run."""
    monkeypatch.setenv("FUSEDSEQ_CPU_RNN_PATH", "pipeline")
    data = inputs(make, 48, 8, 272, 40)  # 3 chunks of 16 steps; dW_ih in two column blocks
    one = lstm_run(make, 48, 8, 272, 40, data)
    torch.set_num_threads(2)
    for _ in range(3):
        for a, b in zip(one, lstm_run(make, 48, 8, 272, 40, data)):
            assert torch.equal(a, b)


def test_weight_grads_on_more_threads_use_aten(make, monkeypatch):
    """Past two threads the weight gradients go back to ATen's product (a
    column block is one thread's at a time, which would idle the others):
    same numbers to fp32 rounding, against float64."""
    data = inputs(make, 24, 16, 64, 48)
    ref = lstm_run(make, 24, 16, 64, 48, [t.double() for t in data])
    torch.set_num_threads(3)
    three = lstm_run(make, 24, 16, 64, 48, data)
    torch.set_num_threads(2)
    two = lstm_run(make, 24, 16, 64, 48, data)
    for name, a, b, r in zip(["w_ih", "w_hh", "b_ih", "b_hh"], three[-4:], two[-4:], ref[-4:]):
        assert rel_err(a, r) <= FP32_RTOL, f"{name}: three threads vs float64"
        assert rel_err(b, r) <= FP32_RTOL, f"{name}: two threads vs float64"
