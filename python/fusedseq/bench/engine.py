"""Runs one case: check each implementation against the reference, time it,
and turn the results into rows.

Protocol, per mode:
1. For each implementation, one untimed call whose result is compared with
   the float64 reference (forward: the output; forward+backward: the
   gradients of the leaves), then its warm-up, which sets its run count.
2. The timed runs of all implementations, in interleaved rounds.

Forward rows run under ``torch.no_grad()``: inference, where no path saves
anything for backward. Forward+backward rows run ``out.backward(g)`` with
one fixed random ``g`` shared by all paths; each call first drops the
previous gradients (``.grad = None``, so no accumulation kernel runs).

A path that cannot run (no SDPA kernel for these inputs, out of memory)
becomes a "skipped" row with the reason; any other exception an "error"
row, so that one failure never loses the rest of a sweep. The same holds
for the float64 reference: if it cannot be computed, the paths are still
timed and the error columns stay empty.
"""
from __future__ import annotations

import gc
import traceback
import warnings
from contextlib import contextmanager
from typing import Callable, Optional

import torch

from .accuracy import Error, tensor_error, worst_error
from .case import Case, CaseSetup, Impl, Reference, Row, Unavailable, dtype_name
from .flops import FWD
from .timing import Contender, TimingOptions, run_count, summarize, time_interleaved, warm_up

# Messages PyTorch raises when a forced SDPA backend has no kernel for the inputs.
_NO_KERNEL_MARKERS = ("No available kernel", "No viable backend")


def _first_line(text: str, limit: int = 160) -> str:
    text = text.strip()
    return (text.splitlines()[0] if text else "")[:limit]


def _describe_failure(exc: BaseException, caught: list) -> tuple[str, str]:
    """(status, note) for an exception raised by a path; ``caught`` are the
    warnings it raised first (SDPA explains each rejected backend in one)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return "skipped", "out of memory"
    text = str(exc)
    if any(m in text for m in _NO_KERNEL_MARKERS):
        reasons = [_first_line(str(w.message), 100) for w in caught]
        return "skipped", "no kernel for these inputs" + (f" ({reasons[0]})" if reasons else "")
    return "error", f"{type(exc).__name__}: {_first_line(text)}"


def _clear_grads(impl: Impl) -> None:
    for t in impl.leaves:
        t.grad = None


def _step(impl: Impl, mode: str, grad_output: torch.Tensor) -> Callable[[], object]:
    """The callable that is checked and timed for one implementation and mode."""
    if mode == FWD:
        def forward_only():
            with torch.no_grad():
                return impl.forward()
        return forward_only

    def forward_backward():
        _clear_grads(impl)
        out = impl.forward()
        out.backward(grad_output)
        return out
    return forward_backward


def _check(impl: Impl, mode: str, step: Callable[[], object], ref: Optional[Reference]) -> Optional[Error]:
    """Runs ``step`` once; its error against ``ref`` (None without a reference)."""
    out = step()
    if ref is None:
        err = None
    elif mode == FWD:
        err = tensor_error(ref.select_output(out), ref.output)
    else:
        grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in impl.leaves]
        err = worst_error(ref.select_grads(grads), ref.grads)
    _clear_grads(impl)
    return err


def _release_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


@contextmanager
def _prepared(impl: Impl, mode: str):
    """The state a path's calls run in: its mode hook, then its context (e.g.
    sdpa_kernel), entered once around a batch of runs: entering it per call
    would add its own cost (~20 µs) to the forced-backend rows."""
    if impl.prepare is not None:
        impl.prepare(mode)
    with impl.context():
        yield


def _fail(row: Row, impl: Impl, device: torch.device, exc: BaseException, caught: list, verbose: bool) -> None:
    row.status, row.note = _describe_failure(exc, caught)
    row.timing, row.error = None, None
    if row.status == "error" and verbose:
        traceback.print_exception(exc)
    _clear_grads(impl)
    _release_memory(device)


def _check_and_warm(case: Case, impl: Impl, mode: str, setup: CaseSetup, ref: Optional[Reference],
                    opts: TimingOptions, row: Row, verbose: bool) -> Optional[Contender]:
    """Phase 1 for one path: error check and warm-up. Returns the path's
    contender for the timed rounds, or None (row marked skipped/error)."""
    step = _step(impl, mode, setup.grad_output)
    failure = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # each distinct warning once, not once per call
        try:
            with _prepared(impl, mode):
                row.error = _check(impl, mode, step, ref)
                per_call = warm_up(step, case.device, opts)
        except Exception as exc:  # noqa: BLE001  (one path failing must not end the sweep)
            failure = exc.with_traceback(None) if not verbose else exc
    # Warnings are kept (JSON) rather than printed: a forced SDPA backend
    # warns on every rejected call, which would flood the table.
    row.warnings = sorted({_first_line(str(w.message), 300) for w in caught})
    if failure is not None:
        # Outside the except block, so the failed call's tensors can be freed.
        _fail(row, impl, case.device, failure, caught, verbose)
        return None
    return Contender(step, run_count(per_call, opts), context=lambda: _prepared(impl, mode))


def _run_mode(case: Case, mode: str, setup: CaseSetup, ref: Optional[Reference], ref_failure: str,
              opts: TimingOptions, verbose: bool) -> list[Row]:
    """Every path of one mode: check and warm each, then time them in
    interleaved rounds (see :func:`~fusedseq.bench.timing.time_interleaved`)."""
    rows, contenders = [], []
    for impl in setup.impls:
        row = _base_row(case, mode, impl)
        if ref is not None and ref.note:
            row.extra["ref"] = ref.note
        if ref_failure:
            row.extra["ref"] = ref_failure
        rows.append(row)
        if isinstance(impl, Unavailable):
            row.status, row.note = "skipped", impl.reason
            continue
        row.note = impl.note
        contender = _check_and_warm(case, impl, mode, setup, ref, opts, row, verbose)
        if contender is not None:
            contenders.append((impl, row, contender))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # already recorded during the warm-up
        time_interleaved([c for _, _, c in contenders], case.device, opts.rounds)
    for impl, row, c in contenders:
        if c.failure is not None:
            _fail(row, impl, case.device, c.failure, [], verbose)
            continue
        row.timing = summarize(c.samples)
        if case.steps:
            row.extra["us_per_step"] = row.timing.median_s / case.steps * 1e6
    _fill_speedups(rows)
    return rows


def _fill_speedups(rows: list[Row]) -> None:
    """Speed-up of the fused path over each other path, and over the fastest."""
    timed = [r for r in rows if r.status == "ok" and r.timing is not None]
    fused = next((r for r in timed if r.fused), None)
    if fused is None:
        return
    others = [r for r in timed if not r.fused]
    for r in others:
        r.speedup = r.timing.median_s / fused.timing.median_s
    if others:
        best = min(others, key=lambda r: r.timing.median_s)
        fused.speedup = best.timing.median_s / fused.timing.median_s
        fused.vs = best.impl


def _base_row(case: Case, mode: str, impl) -> Row:
    return Row(op=case.op, device=str(case.device), dtype=dtype_name(case.dtype), mode=mode,
               case=case.label, params=dict(case.params), impl=impl.name, fused=impl.fused,
               flops=case.flops[mode], extra=dict(case.extra.get(mode, {})))


def _compute_reference(setup: CaseSetup, case: Case) -> tuple[Optional[Reference], str]:
    needs_grads = any(m != FWD for m in case.modes)
    failure = None
    try:
        return setup.reference(needs_grads), ""
    except Exception as exc:  # noqa: BLE001
        failure = "out of memory" if isinstance(exc, torch.OutOfMemoryError) else \
            f"{type(exc).__name__}: {_first_line(str(exc))}"
    _release_memory(case.device)
    return None, f"no float64 reference ({failure})"


def run_case(case: Case, opts: TimingOptions, verbose: bool = False) -> list[Row]:
    """All rows of one case (every mode × implementation); ``verbose`` prints
    the traceback of a path that fails with an unexpected error."""
    try:
        setup = case.build()
    except Exception as exc:  # noqa: BLE001  e.g. out of memory for the inputs
        if verbose:
            traceback.print_exc()
        failed = Unavailable("(inputs)", f"could not build the case: {type(exc).__name__}: "
                                         f"{_first_line(str(exc))}")
        rows = [_base_row(case, m, failed) for m in case.modes]
        for r in rows:
            r.status, r.note = "error", failed.reason
        return rows

    ref, ref_failure = _compute_reference(setup, case)
    rows: list[Row] = []
    for mode in case.modes:
        rows += _run_mode(case, mode, setup, ref, ref_failure, opts, verbose)
    del setup, ref
    gc.collect()  # the timed runs paused the collector; free this case's cycles now
    _release_memory(case.device)
    return rows
