"""Training under torch.distributed: 2 CPU processes (gloo) running the
TransformerLM (backend="fused") in DistributedDataParallel with the same
Trainer reach the parameters of one process trained on the whole global batch.

Why not bitwise: each rank computes the mean loss of its half and DDP averages
the two gradients, (g0 + g1) / 2, where one process sums all rows at once;
the same real number, rounded in a different order (float32 rounding, ~1e-7
relative), which AdamW then carries through three steps. Measured: the
parameters agree to a norm-wise relative 1.5e-6, the losses to ~1e-7.

The model has no biases (``bias=False``): the key projection's bias has an
exactly zero gradient (it adds ``q·b`` to all of a query's scores, which the
softmax ignores), so its computed gradient is pure rounding noise, and Adam,
which divides a gradient by its own running RMS, turns noise of 1e-10 into
steps of 1e-5 that differ between any two summation orders. That is a
property of Adam on a zero-gradient parameter, not of DDP.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

import fusedseq
from fusedseq.training import load_checkpoint

sys.path.insert(0, os.path.dirname(__file__))
import _ddp_worker as worker  # noqa: E402
from conftest import FP32_RTOL, rel_err  # noqa: E402

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(fusedseq.__file__)))
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ddp_worker.py")
WORLD = 2

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available in this torch build")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(out) -> list[dict]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([PACKAGE_PARENT] + [p for p in [env.get("PYTHONPATH")] if p])
    port = free_port()
    procs = [subprocess.Popen([sys.executable, WORKER, str(rank), str(WORLD), str(port), str(out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for rank in range(WORLD)]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=120)[0].decode())
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, text) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{text}"
    return [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD)]


def max_rel_diff(a: dict, b: dict) -> float:
    """The largest norm-wise relative difference ‖a[k] − b[k]‖ / ‖b[k]‖ over the tensors.
    Norm-wise only (a plain float, not rel_err's per-element check): after
    AdamW steps a summation-order difference in one gradient element is
    amplified by 1/sqrt(v) where v is tiny, so single parameters may differ by
    far more than the whole does; the whole is what DDP must reproduce."""
    assert set(a) == set(b)
    return max(float(rel_err(a[k], b[k])) for k in b)


def test_ddp_two_processes_equal_one_process_on_the_global_batch(tmp_path):
    ranks = run_ranks(tmp_path)

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, single_losses, single_seen = worker.train_run()
        half_model, _, _ = worker.train_run(global_batch=worker.GLOBAL_BATCH // WORLD)
    finally:
        torch.set_num_threads(before)
    single = {k: v.detach() for k, v in model.state_dict().items()}

    # Each rank saw its own contiguous half of the very global batch one process saw.
    half = worker.GLOBAL_BATCH // WORLD
    assert len(single_seen) == worker.STEPS
    for step in range(worker.STEPS):
        for rank in range(WORLD):
            assert ranks[rank]["seen"][step].shape == (half, worker.CONTEXT)
            assert torch.equal(ranks[rank]["seen"][step], single_seen[step][rank * half:(rank + 1) * half])

    # DDP keeps the replicas identical, bit for bit, and both log the global loss.
    for k in single:
        assert torch.equal(ranks[0]["params"][k], ranks[1]["params"][k]), k
    assert ranks[0]["losses"] == ranks[1]["losses"]

    # Equal to the single process up to the order of the float32 sums.
    assert len(ranks[0]["losses"]) == worker.STEPS
    for ddp_loss, one_loss in zip(ranks[0]["losses"], single_losses):
        assert abs(ddp_loss - one_loss) <= 1e-5 * abs(one_loss), (ddp_loss, one_loss)
    diff = max_rel_diff(ranks[0]["params"], single)
    assert diff < FP32_RTOL, f"DDP vs one process: max relative parameter difference {diff:.3g}"
    # The bound means something: training on half the batch lands far away.
    half_diff = max_rel_diff({k: v.detach() for k, v in half_model.state_dict().items()}, single)
    assert half_diff > 1e-3, half_diff

    # Rank 0 wrote the checkpoint: unwrapped parameter names, both ranks' RNG states.
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "step_00000003.pt")
    assert ckpt["world_size"] == WORLD and len(ckpt["rng"]["per_rank"]) == WORLD
    assert ckpt["losses"] == ranks[0]["losses"]
    for k in single:
        assert torch.equal(ckpt["model"][k], ranks[0]["params"][k]), k
