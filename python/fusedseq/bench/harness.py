"""Benchmark cases and how one runs.

A case's builder (registered with :func:`case`, in ``cases/``) draws the
inputs and returns a :class:`Setup`: the paths computing the op on them
("fused" first, then PyTorch's) and the op's reference, evaluated here in
float64. Per mode each path is checked once (output, or every gradient from
one fixed output gradient), warmed up and timed with the others in
interleaved rounds; an unstable timing is repeated; a failing path becomes a
"skipped" or "error" row. Forward rows run under ``torch.no_grad()``.
"""
from __future__ import annotations

import gc
import math
import time
import traceback
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Optional, Sequence, Union

import torch
from torch import Tensor

from .timing import Budget, Contender, Timing, busy_cores, interleave, warm_up

FWD, FWD_BWD, STEP = "fwd", "fwd+bwd", "step"  # STEP: timed as it is, no reference (a training step)
MODES = (FWD, FWD_BWD)
_NO_KERNEL = ("No available kernel", "No viable backend")  # SDPA: a forced backend rejects the inputs


@dataclass
class Path:
    """``fn()`` returns the output; ``leaves``: whose ``.grad`` to compare, in the
    inputs' order (default: the inputs); ``context``: entered around its calls."""
    fn: Callable[[], Any]
    leaves: Optional[Sequence[Tensor]] = None
    context: Callable[[], ContextManager] = nullcontext
    note: str = ""


@dataclass
class Setup:
    """``paths``: name -> Path, callable, or why it cannot run here. ``reference(*inputs)``
    runs on float64 copies (cut to ``ref_slices``, one per input then the output, if
    given). ``columns``: mode -> extra table columns."""
    inputs: Sequence[Tensor]
    paths: dict[str, Union[Path, Callable[[], Any], str]]
    reference: Optional[Callable[..., Tensor]] = None
    ref_slices: Optional[Sequence[Any]] = None
    columns: dict[str, dict[str, str]] = field(default_factory=dict)
    note: str = ""


@dataclass
class Op:
    """A registered case: see :func:`case`."""
    name: str
    build: Callable[..., Setup]
    shapes: dict[str, list[dict]]                  # "cpu", "cuda", "quick" -> parameter dicts
    primary: Union[str, tuple]                     # the PyTorch path(s) the summary compares with
    work: Callable[..., tuple[float, str]]         # (params, mode) -> (per call, "FLOP" or "tok")
    dtypes: dict = field(default_factory=lambda: {"cpu": [torch.float32],
                                                  "cuda": [torch.float32, torch.bfloat16, torch.float16]})
    modes: Union[Sequence[str], Callable[[dict], Sequence[str]]] = MODES  # or params -> modes (decoding: FWD)
    cuda_ops: Sequence[str] = ()                   # torch.ops.fusedseq names the CUDA rows need
    loaded: bool = False                           # run with every core busy (timing.busy_cores)

    def modes_for(self, params: dict) -> Sequence[str]:
        return self.modes(params) if callable(self.modes) else self.modes


REGISTRY: dict[str, Op] = {}


def case(name: str, **op):
    """Registers ``builder(make, **params) -> Setup`` as ``Op(name, builder, **op)``."""
    def register(builder):
        REGISTRY[name] = Op(name, builder, **op)
        return builder
    return register


class Maker:
    """Seeded inputs: normal (or uniform in ±scale) drawn in float32, rounded to the case's dtype."""

    def __init__(self, device: torch.device, dtype: torch.dtype, seed: int):
        self.device, self.dtype = device, dtype
        self.gen = torch.Generator(device).manual_seed(seed)

    def __call__(self, *shape: int, scale: float = 1.0, uniform: bool = False, grad: bool = True) -> Tensor:
        kw = dict(generator=self.gen, device=self.device, dtype=torch.float32)
        t = (torch.rand(*shape, **kw) * 2 - 1) if uniform else torch.randn(*shape, **kw)
        return (t * scale).to(self.dtype).requires_grad_(grad)


@dataclass
class Case:
    op: Op
    device: torch.device
    dtype: torch.dtype
    params: dict
    modes: Sequence[str]

    @property
    def label(self) -> str:
        return " ".join(k if v is True else f"{k}={v}" for k, v in self.params.items()
                        if v is not False and v is not None)


@dataclass
class Row:
    """One path × case × mode. ``speedup``: its time / fused's (fused row: the fastest
    path's, ``vs``); ``trusted``: neither timing is unstable."""
    op: str
    device: str
    dtype: str
    mode: str
    case: str
    params: dict
    impl: str
    status: str = "ok"           # ok | skipped | error
    note: str = ""
    timing: Optional[Timing] = None
    work: float = 0.0
    unit: str = "FLOP"
    max_abs: Optional[float] = None
    rel: Optional[float] = None
    speedup: Optional[float] = None
    vs: str = ""
    trusted: bool = True
    remeasured: int = 0
    columns: dict = field(default_factory=dict)

    @property
    def fused(self) -> bool:
        return self.impl == "fused"

    @property
    def unstable(self) -> str:
        return self.timing.unstable if self.timing else ""


# ------------------------------------------------------------------ errors --
def _error(got: Sequence[Tensor], ref: Sequence[Tensor]) -> tuple[float, float]:
    """Worst max |got − ref| and worst ‖got − ref‖/‖ref‖ over the pairs; NaN shows."""
    worst_abs = worst_rel = 0.0
    for g, r in zip(got, ref):
        d = g.detach().to(torch.float64).reshape(r.shape) - r
        if d.isnan().any():
            return math.nan, math.nan
        norm = torch.linalg.vector_norm(r).item()
        worst_abs = max(worst_abs, d.abs().max().item() if d.numel() else 0.0)
        worst_rel = max(worst_rel, torch.linalg.vector_norm(d).item() / norm if norm else 0.0)
    return worst_abs, worst_rel


def _reference(setup: Setup, grad_out: Optional[Tensor]) -> tuple[Tensor, Optional[list[Tensor]]]:
    slices = setup.ref_slices or [slice(None)] * (len(setup.inputs) + 1)
    x64 = [t.detach()[s].to(torch.float64).requires_grad_(grad_out is not None)
           for t, s in zip(setup.inputs, slices)]
    out = setup.reference(*x64)
    if grad_out is None:
        return out.detach(), None
    return out.detach(), list(torch.autograd.grad(out, x64, grad_out[slices[-1]].to(torch.float64)))


# ----------------------------------------------------------------- running --
@contextmanager
def _calling(path: Path, mode: str):
    with (torch.no_grad() if mode == FWD else nullcontext()), path.context():
        yield


def _failure(exc: BaseException, caught) -> tuple[str, str]:
    text = (str(exc).strip().splitlines() or [""])[0][:160]
    if isinstance(exc, torch.OutOfMemoryError):
        return "skipped", "out of memory"
    if any(m in str(exc) for m in _NO_KERNEL):
        why = [str(w.message).splitlines()[0][:100] for w in caught]
        return "skipped", "no kernel for these inputs" + (f" ({why[0]})" if why else "")
    return "error", f"{type(exc).__name__}: {text}"


def _run_mode(case: Case, mode: str, setup: Setup, make: Maker, budget: Budget, verbose: bool) -> list[Row]:
    amount, unit = case.op.work(case.params, mode)
    rows, contenders = [], []
    state: dict[str, Any] = {}  # the output gradient, drawn on the first backward; the reference

    for name, path in setup.paths.items():
        row = Row(case.op.name, str(case.device), str(case.dtype).removeprefix("torch."), mode, case.label,
                  dict(case.params), name, work=amount, unit=unit, columns=setup.columns.get(mode, {}),
                  note=setup.note)
        rows.append(row)
        if isinstance(path, str):
            row.status, row.note = "skipped", path
            continue
        path = path if isinstance(path, Path) else Path(path)
        row.note = "; ".join(n for n in (row.note, path.note) if n)
        leaves = list(path.leaves if path.leaves is not None else setup.inputs)
        step = _step(path.fn, leaves, mode, make, state)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with _calling(path, mode):
                    out = step()
                    if setup.reference is not None and mode != STEP:
                        _check(setup, mode, out, leaves, state, row)
                    runs = warm_up(step, case.device, budget)
            except Exception as exc:  # noqa: BLE001  one path failing must not end the sweep
                row.status, row.note = _failure(exc, caught)
                if verbose and row.status == "error":
                    traceback.print_exception(exc)
                continue
            finally:
                for t in leaves:
                    t.grad = None
        contenders.append((row, Contender(step, runs, lambda p=path: _calling(p, mode))))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a forced SDPA backend warns on every call
        for attempt in range(budget.retries + 1):
            started = time.perf_counter()
            load = interleave([c for _, c in contenders], case.device, budget.rounds)
            for row, c in contenders:
                if c.failure is not None:
                    row.status, row.note, row.timing = *_failure(c.failure, []), None
                    continue
                row.timing, row.remeasured = c.timing(case.device), attempt
                if load and not case.op.loaded and not row.timing.unstable:
                    row.timing.unstable = load
            if not any(r.unstable for r, _ in contenders) or time.perf_counter() - started > budget.retry_below_s:
                break  # stable, or too slow to measure again (its rows stay marked)
    _speedups(rows)
    return rows


def _step(fn: Callable[[], Any], leaves: list[Tensor], mode: str, make: Maker, state: dict) -> Callable[[], Any]:
    if mode != FWD_BWD:
        return fn

    def forward_backward():
        for t in leaves:
            t.grad = None
        out = fn()
        if "grad_out" not in state:
            state["grad_out"] = make(*out.shape, grad=False)
        out.backward(state["grad_out"])
        return out
    return forward_backward


def _check(setup: Setup, mode: str, out: Tensor, leaves: list[Tensor], state: dict, row: Row) -> None:
    key = f"ref {mode}"
    if key not in state:
        try:
            state[key] = _reference(setup, state.get("grad_out") if mode == FWD_BWD else None)
        except Exception as exc:  # noqa: BLE001  the paths are still timed
            state[key] = f"no float64 reference ({_failure(exc, [])[1]})"
    if isinstance(state[key], str):
        row.note = "; ".join(n for n in (row.note, state[key]) if n)
        return
    ref_out, ref_grads = state[key]
    slices = setup.ref_slices or [slice(None)] * (len(leaves) + 1)
    if mode == FWD:
        row.max_abs, row.rel = _error([out[slices[-1]]], [ref_out])
        return
    grads = [(t.grad if t.grad is not None else torch.zeros_like(t))[s] for t, s in zip(leaves, slices)]
    row.max_abs, row.rel = _error(grads, ref_grads)


def _speedups(rows: list[Row]) -> None:
    timed = [r for r in rows if r.timing is not None]
    fused = next((r for r in timed if r.fused), None)
    others = [r for r in timed if not r.fused]
    if fused is None or not others:
        return
    for r in others:
        r.speedup = r.timing.median / fused.timing.median
        r.trusted = not (r.unstable or fused.unstable)
    best = min(others, key=lambda r: r.timing.median)
    fused.speedup, fused.vs, fused.trusted = best.speedup, best.impl, best.trusted


def run_case(case: Case, budget: Budget, seed: int = 0, verbose: bool = False) -> list[Row]:
    """Every row of one case: each mode × path."""
    make = Maker(case.device, case.dtype, seed)
    try:
        setup = case.op.build(make, **case.params)
    except Exception as exc:  # noqa: BLE001  e.g. out of memory for the inputs
        if verbose:
            traceback.print_exc()
        return [Row(case.op.name, str(case.device), str(case.dtype).removeprefix("torch."), m, case.label,
                    dict(case.params), "fused", *_failure(exc, [])) for m in case.modes]
    try:
        with busy_cores() if case.op.loaded else nullcontext():
            return [r for mode in case.modes for r in _run_mode(case, mode, setup, make, budget, verbose)]
    finally:
        del setup
        gc.collect()
        if case.device.type == "cuda":
            torch.cuda.empty_cache()
