"""Training throughput of the TransformerLM, ``backend="fused"`` against
``backend="reference"`` (SDPA), in tokens per second.

What one timed call is: a whole optimisation step, forward, cross-entropy,
backward and an AdamW update, on a batch of ``B × T`` tokens. Both backends
train their own copy of one model (same initial weights, same batches), so
the two copies stay equal to rounding and every step of one is the same
amount of work as the other's. Only attention differs between them; the
embeddings, LayerNorms, MLPs and the output head are the same PyTorch code,
so the ratio says what the fused attention buys a whole model, not the op
alone.

Before timing, a few steps of both copies are compared: their losses must
agree, or the figures would compare different computations.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import torch

from .timing import Contender, TimingOptions, run_count, summarize, time_interleaved, warm_up


@dataclass(frozen=True)
class LmShape:
    """A model size and a batch: ``batch × context`` tokens per step."""
    batch: int
    context: int
    d_model: int
    n_layers: int
    n_heads: int
    vocab: int

    @property
    def label(self) -> str:
        return (f"B={self.batch} T={self.context} d={self.d_model} L={self.n_layers} "
                f"h={self.n_heads} V={self.vocab}")


# The lm example's model (the default corpus has a vocabulary of about a
# hundred words), and the same with a 4x longer context, where attention's
# share of the step grows.
CPU_SHAPES = [LmShape(32, 64, 128, 4, 4, 128), LmShape(8, 256, 128, 4, 4, 128)]
CUDA_SHAPES = [LmShape(64, 256, 512, 8, 8, 8192), LmShape(16, 1024, 512, 8, 8, 8192),
               LmShape(8, 2048, 1024, 8, 16, 8192)]
QUICK_SHAPES = [LmShape(4, 16, 32, 2, 2, 32)]


@dataclass
class LmRow:
    device: str
    dtype: str
    shape: LmShape
    tokens_per_s: dict            # backend -> tokens/s (median step)
    step_ms: dict                 # backend -> median ms per step
    iqr_ms: dict                  # backend -> inter-quartile range, ms
    speedup: Optional[float]      # fused tokens/s over reference tokens/s
    loss_diff: float              # max |loss_fused - loss_reference| over the check steps
    note: str = ""

    def to_dict(self) -> dict:
        return {"device": self.device, "dtype": self.dtype, "shape": asdict(self.shape),
                "label": self.shape.label, "tokens_per_s": self.tokens_per_s, "step_ms": self.step_ms,
                "iqr_ms": self.iqr_ms, "speedup": self.speedup, "loss_diff": self.loss_diff,
                "note": self.note}


def default_shapes(device: torch.device, quick: bool) -> list[LmShape]:
    if quick:
        return QUICK_SHAPES
    return CUDA_SHAPES if device.type == "cuda" else CPU_SHAPES


def _make_trainers(shape: LmShape, device: torch.device, dtype: torch.dtype, seed: int):
    """Two equal models (fused, reference) with their optimisers and one
    fixed batch of random tokens; returns {backend: step_fn}."""
    from ..nn.transformer import TransformerConfig, TransformerLM

    torch.manual_seed(seed)
    config = TransformerConfig(vocab_size=shape.vocab, context_length=shape.context, d_model=shape.d_model,
                               n_layers=shape.n_layers, n_heads=shape.n_heads, backend="fused")
    fused = TransformerLM(config).to(device=device, dtype=dtype)
    reference = TransformerLM(config).to(device=device, dtype=dtype)
    reference.load_state_dict(fused.state_dict())
    reference.set_backend("reference")
    gen = torch.Generator().manual_seed(seed + 1)
    tokens = torch.randint(0, shape.vocab, (shape.batch, shape.context + 1), generator=gen).to(device)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]

    def trainer(model):
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step() -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            _, loss = model(inputs, targets)
            loss.backward()
            opt.step()
            return loss.detach()

        return step

    return {"fused": trainer(fused), "reference": trainer(reference)}


def measure(shape: LmShape, device: torch.device, dtype: torch.dtype, timing: TimingOptions,
            seed: int = 0, check_steps: int = 3) -> LmRow:
    steps = _make_trainers(shape, device, dtype, seed)
    # The two copies must compute the same thing: compare their first losses.
    losses = {name: [float(fn()) for _ in range(check_steps)] for name, fn in steps.items()}
    loss_diff = max(abs(a - b) for a, b in zip(losses["fused"], losses["reference"]))
    contenders = {name: Contender(fn, run_count(warm_up(fn, device, timing), timing))
                  for name, fn in steps.items()}
    runs = max(c.runs for c in contenders.values())
    for c in contenders.values():
        c.runs = runs  # the same number of steps each: the same optimiser trajectory length
    time_interleaved(list(contenders.values()), device, timing.rounds)
    tokens = shape.batch * shape.context
    tps, ms, iqr = {}, {}, {}
    for name, c in contenders.items():
        if c.failure is not None:
            raise c.failure
        t = summarize(c.samples)
        tps[name], ms[name], iqr[name] = tokens / t.median_s, t.median_s * 1e3, t.iqr_s * 1e3
    note = "" if loss_diff <= 1e-3 * max(1.0, abs(losses["reference"][0])) else "LOSSES DIFFER"
    return LmRow(str(device), str(dtype).removeprefix("torch."), shape, tps, ms, iqr,
                 tps["fused"] / tps["reference"], loss_diff, note)


def run(devices: Sequence[torch.device], dtypes: Optional[Sequence[torch.dtype]], timing: TimingOptions,
        quick: bool = False, seed: int = 0, shapes: Optional[Sequence[LmShape]] = None) -> list[LmRow]:
    rows = []
    for device in devices:
        for dtype in dtypes or [torch.float32]:
            for shape in shapes or default_shapes(device, quick):
                rows.append(measure(shape, device, dtype, timing, seed))
    return rows


def format_rows(rows: Sequence[LmRow]) -> str:
    header = f"{'device':6} {'dtype':8} {'model and batch':44} {'fused tok/s':>12} {'ref tok/s':>12} " \
             f"{'speed-up':>8} {'ms/step f|r':>15} {'|Δloss|':>8}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r.device:6} {r.dtype:8} {r.shape.label:44} {r.tokens_per_s['fused']:12,.0f} "
                     f"{r.tokens_per_s['reference']:12,.0f} {r.speedup:7.2f}x "
                     f"{r.step_ms['fused']:7.2f}|{r.step_ms['reference']:<7.2f} {r.loss_diff:8.1e}"
                     + (f"  {r.note}" if r.note else ""))
    return "\n".join(lines)


def geomean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))
