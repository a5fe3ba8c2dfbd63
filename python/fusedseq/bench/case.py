"""The data a benchmark case is made of, and the row it produces.

A *case* is one op on one device, dtype and shape (plus flags such as
``causal``), run in one or both modes (forward, forward+backward). Its
*implementations* (fusedseq and each PyTorch path) all read the same input
tensors, so they compute the same function of the same numbers, and each is
compared with one float64 reference computed from those inputs.

Building the tensors is deferred to :attr:`Case.build` so that listing the
cases of a sweep costs nothing and only one case's memory is alive at a time.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Optional, Sequence

import torch
from torch import Tensor

from .accuracy import Error
from .timing import Timing

FUSED = "fused"


@dataclass
class Impl:
    """One way of computing the case's op.

    Attributes:
        name: shown in the table ("fused", "nn.RNN", "sdpa[FLASH_ATTENTION]", ...).
        forward: runs the op on the case's inputs, returns the output that is
            compared with the reference and back-propagated from.
        leaves: the tensors whose ``.grad`` a forward+backward row compares,
            in the order of :attr:`Reference.grads` (a module's parameters
            where the path owns copies of the weights).
        context: entered around the path's runs (e.g. ``sdpa_kernel([backend])``).
        prepare: called with the mode before a mode's runs (e.g. switching a
            module between ``eval()`` for forward and ``train()`` for
            training, which selects cuDNN's inference or training kernels).
        fused: this is fusedseq's implementation (the one others compare to).
        note: shown in the row's note column (e.g. which backend SDPA chose).
    """
    name: str
    forward: Callable[[], Tensor]
    leaves: Sequence[Tensor]
    context: Callable[[], ContextManager] = contextlib.nullcontext
    prepare: Optional[Callable[[str], None]] = None
    fused: bool = False
    note: str = ""


@dataclass
class Unavailable:
    """An implementation that cannot run here, with the reason shown as a note."""
    name: str
    reason: str
    fused: bool = False


@dataclass
class Reference:
    """Float64 results on the case's inputs (possibly on a slice of them, for
    shapes whose float64 score matrix would not fit; ``select`` maps an
    implementation's full result to that slice)."""
    output: Tensor
    grads: Optional[list[Tensor]]
    select_output: Callable[[Tensor], Tensor] = lambda t: t
    select_grads: Callable[[list[Tensor]], list[Tensor]] = lambda ts: ts
    note: str = ""


@dataclass
class CaseSetup:
    """What :attr:`Case.build` returns: the implementations, the fixed random
    gradient of the output used by every backward run, and a function that
    computes the float64 reference (gradients only when ``with_grads``)."""
    impls: list  # of Impl | Unavailable
    grad_output: Tensor
    reference: Callable[[bool], Reference]


@dataclass
class Case:
    """One op × device × dtype × shape (see module doc).

    Attributes:
        op: "rnn_cell", "rnn" or "attention".
        label: the shape in words, e.g. "T=200 B=16 I=256 H=256 tanh".
        params: the same as data (JSON/CSV columns).
        flops: useful FLOPs per call, per mode.
        steps: recurrence steps per call, for the µs/step column (RNN), else None.
        extra: per-mode case-level columns (e.g. ``{"fwd": {"cuDNN": "small_h"}}``).
    """
    op: str
    device: torch.device
    dtype: torch.dtype
    label: str
    params: dict[str, Any]
    modes: Sequence[str]
    flops: dict[str, float]
    build: Callable[[], CaseSetup]
    steps: Optional[int] = None
    extra: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class Row:
    """One implementation of one case in one mode: what the table, JSON and
    CSV show. ``speedup`` is the fused path's speed-up over this row's path
    (this time / fused time); on the fused row it is over the fastest
    PyTorch path, named in ``vs``. ``status`` is "ok", "skipped" or "error"."""
    op: str
    device: str
    dtype: str
    mode: str
    case: str
    params: dict[str, Any]
    impl: str
    fused: bool
    status: str = "ok"
    note: str = ""
    timing: Optional[Timing] = None
    flops: float = 0.0
    error: Optional[Error] = None
    speedup: Optional[float] = None
    vs: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def flop_rate(self) -> Optional[float]:
        """Useful FLOP/s, or None without a timing."""
        if self.timing is None or self.timing.median_s <= 0:
            return None
        return self.flops / self.timing.median_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op, "device": self.device, "dtype": self.dtype, "mode": self.mode,
            "case": self.case, "params": self.params, "impl": self.impl, "fused": self.fused,
            "status": self.status, "note": self.note,
            "timing": None if self.timing is None else self.timing.to_dict(),
            "flops": self.flops, "flop_rate": self.flop_rate,
            "speedup": self.speedup, "vs": self.vs,
            "max_abs_err": None if self.error is None else self.error.max_abs,
            "rel_err": None if self.error is None else self.error.rel,
            "extra": self.extra, "warnings": self.warnings,
        }


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def random_tensor(shape: Sequence[int], dtype: torch.dtype, device: torch.device,
                  generator: torch.Generator, scale: float = 1.0) -> Tensor:
    """Standard normal × ``scale``, drawn in float32 then rounded to ``dtype``
    (so the same seed gives the same values, up to rounding, in every dtype)."""
    t = torch.randn(*shape, generator=generator, device=device, dtype=torch.float32)
    return (t * scale).to(dtype)


def generator_for(device: torch.device, seed: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def uniform_tensor(shape: Sequence[int], bound: float, dtype: torch.dtype, device: torch.device,
                   generator: torch.Generator) -> Tensor:
    """Uniform in ``[-bound, bound)``: how ``nn.RNN`` initialises its weights
    (``bound = 1/sqrt(H)``), which keeps the recurrence away from saturation."""
    t = torch.rand(*shape, generator=generator, device=device, dtype=torch.float32)
    return ((t * 2.0 - 1.0) * bound).to(dtype)


def leaf(t: Tensor) -> Tensor:
    """``t`` as a fresh leaf that collects gradients."""
    return t.detach().requires_grad_(True)


def float64_leaves(tensors: Sequence[Tensor], requires_grad: bool) -> list[Tensor]:
    """Float64 copies of the inputs for the reference."""
    return [t.detach().to(torch.float64).requires_grad_(requires_grad) for t in tensors]
