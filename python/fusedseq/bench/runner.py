"""Runs a whole benchmark: which cases, in which order, with progress."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch

import fusedseq

from .case import Case, Row
from .cases import attention, attention_variants, rnn, rnn_cell
from .engine import run_case
from .flops import MODES
from .timing import TimingOptions

OPS = {"rnn_cell": rnn_cell, "rnn": rnn, "attention": attention, "attention_variants": attention_variants}

# Names an op may have in build_info()["cuda_ops"]: its public name or its
# torch.ops schema names.
_CUDA_OP_NAMES = {
    "rnn_cell": {"rnn_cell", "rnn_cell_backward"},
    "rnn": {"rnn", "rnn_backward"},
    "attention": {"attention", "attention_fwd", "attention_bwd"},
    "attention_variants": {"attention_fwd", "attention_varlen_fwd"},
}


@dataclass
class BenchConfig:
    """What to run. ``None`` for ``dtypes`` or an op's ``shapes`` means that
    op's defaults for the device (CPU: one representative shape, fp32; CUDA:
    the sweeps of issues 3 and 4; ``quick``: tiny shapes for a smoke test)."""
    ops: Sequence[str] = tuple(OPS)
    devices: Sequence[torch.device] = (torch.device("cpu"),)
    dtypes: Optional[Sequence[torch.dtype]] = None
    modes: Sequence[str] = MODES
    quick: bool = False
    timing: TimingOptions = field(default_factory=TimingOptions)
    timing_cuda: Optional[TimingOptions] = None  # None: same as ``timing``
    shapes: dict[str, Sequence[Any]] = field(default_factory=dict)
    nonlinearity: str = "tanh"
    causal: Sequence[bool] = (False, True)
    compiled_loop: Optional[bool] = None
    seed: int = 0
    verbose: bool = False


def cuda_skip_reason(op: str) -> Optional[str]:
    """Why ``op`` has no CUDA rows in this build, or None if it has a kernel."""
    info = fusedseq.build_info()
    if not info.get("cuda_compiled"):
        return "this fusedseq build has no CUDA code"
    probe = info.get("cuda_probe", "ok")
    if probe != "ok":
        return f"this build's CUDA code does not run on this GPU ({probe})"
    if not _CUDA_OP_NAMES[op] & set(info.get("cuda_ops", [])):
        return "no CUDA kernel for this op in this build (build_info()['cuda_ops'])"
    return None


def collect_cases(config: BenchConfig) -> tuple[list[Case], list[str]]:
    """The cases to run, and notes on what was left out and why."""
    cases: list[Case] = []
    notes: list[str] = []
    for device in config.devices:
        for op in config.ops:
            module = OPS[op]
            if device.type == "cuda":
                reason = cuda_skip_reason(op)
                if reason:
                    notes.append(f"{op} on {device}: skipped, {reason}")
                    continue
            shapes = config.shapes.get(op) or module.default_shapes(device, config.quick)
            dtypes = config.dtypes or module.default_dtypes(device)
            kwargs: dict[str, Any] = {"seed": config.seed}
            if op == "attention":
                kwargs["causal"] = config.causal
            else:
                kwargs["nonlinearity"] = config.nonlinearity
            if op == "rnn":
                kwargs["compiled_loop"] = config.compiled_loop
            cases += module.make_cases(device, dtypes, shapes, config.modes, **kwargs)
    return cases, notes


def run_cases(cases: Sequence[Case], config: BenchConfig,
              on_group_done: Optional[Callable[[list[Row]], None]] = None,
              progress: bool = True) -> list[Row]:
    """Runs ``cases`` in order; calls ``on_group_done`` with the rows of each
    finished (op, device) group, e.g. to print its table while the sweep
    goes on. Ctrl-C stops after the current path and returns what finished."""
    from tqdm import tqdm

    rows: list[Row] = []
    group: list[Row] = []
    # disable=None: tqdm draws only on a terminal (no escape codes in CI logs).
    bar = tqdm(total=len(cases), unit="case", file=sys.stderr, disable=None if progress else True, leave=False)
    try:
        for i, case in enumerate(cases):
            bar.set_description(f"{case.op} {case.device.type} {case.label}"[:60])
            opts = config.timing_cuda if case.device.type == "cuda" and config.timing_cuda else config.timing
            case_rows = run_case(case, opts, verbose=config.verbose)
            rows += case_rows
            group += case_rows
            bar.update(1)
            last_of_group = i + 1 == len(cases) or (cases[i + 1].op, cases[i + 1].device) != (case.op, case.device)
            if last_of_group and on_group_done is not None:
                bar.clear()
                on_group_done(group)
                group = []
    except KeyboardInterrupt:
        bar.close()
        print("\ninterrupted: reporting the cases that finished", file=sys.stderr)
        if group and on_group_done is not None:
            on_group_done(group)
    finally:
        bar.close()
    return rows

