"""``python -m fusedseq bench`` and the scripts in ``benchmarks/``: options,
the cases they select, the header, progress, and the output files."""
from __future__ import annotations

import argparse
import contextlib
import datetime
import inspect
import itertools
import os
import platform
import subprocess
import sys
import time
from typing import Any, Optional, Sequence

import torch

import fusedseq
import fusedseq.emulated
from fusedseq.emulated import ops as emulated_ops

from . import cases  # noqa: F401  registers the cases
from .harness import MODES, REGISTRY, Case, run_case
from .report import LEGEND, format_summary, format_table, plot, write_json
from .timing import Budget, LoadMeter

DESCRIPTION = ("Time fusedseq's ops against PyTorch's own paths on the same inputs: median time, rate, "
               "speed-up, error vs a float64 reference, and whether each timing was stable.")
FULL = Budget()
QUICK = Budget(seconds=0.02, min_runs=3, warmup_s=0.0, retries=0)
CUDA_SECONDS = 0.2  # GPU calls are short and the CUDA sweeps long
DTYPES = {n: getattr(torch, t) for t, names in {"float32": "fp32 float", "float16": "fp16 half",
                                                   "bfloat16": "bf16", "float64": "fp64 double"}.items()
          for n in (t, *names.split())}


def _list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _choices(known):
    def parse(text: str) -> list[str]:
        bad = [v for v in _list(text) if v not in known]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(known)}")
        return _list(text)
    return parse


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "yes", "false", "no"):
        return low in ("true", "yes")
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_shape(text: str) -> dict[str, list]:
    """``"T=40,200 B=8"`` -> ``{"T": [40, 200], "B": [8]}``."""
    try:
        return {k: [_value(v) for v in _list(vs)] for k, vs in (item.split("=", 1) for item in text.split())}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected KEY=V[,V...] [KEY=...], got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    ops = list(REGISTRY)
    parser.add_argument("--ops", type=_choices(ops), default=ops,
                        help=f"comma-separated cases to run (default: all: {','.join(ops)})")
    parser.add_argument("--shape", type=parse_shape, action="append", metavar="'K=V[,V] ...'",
                        help="set or sweep case parameters, e.g. 'N=512,1024 D=64 causal=yes' (every "
                             "combination runs; the rest from the case's default; repeatable)")
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default=None,
                        help="default: the CPU, plus CUDA when there is one")
    parser.add_argument("--dtype", type=_choices(DTYPES), default=None,
                        help="e.g. fp32,bf16 (default: fp32 on the CPU; each case's sweep dtypes on CUDA)")
    parser.add_argument("--mode", type=_choices(MODES), default=list(MODES), help="fwd, fwd+bwd or both")
    parser.add_argument("--emulated", action="store_true",
                        help="run the CUDA cases' fusedseq kernels on the host SIMT emulator (CPU tensors, the CUDA "
                             "dtypes, --quick shapes): proves the CUDA path of the harness runs; measures nothing")
    parser.add_argument("--quick", action="store_true",
                        help="tiny shapes, few runs: proves every path runs (< 40 s on 2 cores), measures nothing")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads(N) (default: torch's, one per core)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of timed runs per path (default 0.5 CPU, 0.2 CUDA; --quick 0.02)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    parser.add_argument("--json", metavar="PATH", help="write the rows and the environment as JSON")
    parser.add_argument("--plot", metavar="PATH", help="write a speed-up chart (PNG)")
    parser.add_argument("--verbose", action="store_true", help="tracebacks of paths that fail unexpectedly")


def _cuda_skip(op) -> Optional[str]:
    info = fusedseq.build_info()
    if not info.get("cuda_compiled"):
        return "this build has no CUDA code"
    if info.get("cuda_probe", "ok") != "ok":
        return f"this build's CUDA code does not run here ({info['cuda_probe']})"
    if not set(op.cuda_ops or [op.name]) <= set(info.get("cuda_ops", [])):
        return "no CUDA kernel in this build (build_info()['cuda_ops'])"
    return None


def collect(args) -> tuple[list[Case], list[str]]:
    """The cases the options select, and notes on what was left out."""
    has_cuda = torch.cuda.is_available()
    if args.device == "cuda" and not has_cuda:
        raise SystemExit("error: --device cuda, but torch.cuda.is_available() is False")
    devices = [torch.device("cpu")] if args.device in (None, "cpu", "all") else []
    devices += [torch.device("cuda")] if has_cuda and args.device in (None, "cuda", "all") else []
    if getattr(args, "emulated", False):
        devices, args.quick = [torch.device("cpu")], True
    found, notes = [], []
    for device, name in itertools.product(devices, args.ops):
        op = REGISTRY[name]
        if getattr(args, "emulated", False):
            missing = set(op.cuda_ops or [name]) - set(emulated_ops())
            if missing:
                notes.append(f"{name}: skipped, no emulated CUDA kernel for {', '.join(sorted(missing))}")
                continue
        shapes = op.shapes.get("quick" if args.quick else device.type, [])
        if args.shape:
            accepted = inspect.signature(op.build).parameters
            if any(k not in accepted for s in args.shape for k in s):
                continue  # a --shape for another case
            shapes = [{**(shapes or [{}])[0], **dict(zip(s, values))}
                      for s in args.shape for values in itertools.product(*s.values())]
        reason = _cuda_skip(op) if device.type == "cuda" else None
        if reason:
            notes.append(f"{name} on {device}: skipped, {reason}")
            continue
        kind = "cuda" if getattr(args, "emulated", False) else device.type
        dtypes = [DTYPES[d] for d in args.dtype] if args.dtype else op.dtypes.get(kind, [torch.float32])
        for dt, p in itertools.product(dtypes, shapes):
            modes = [m for m in op.modes_for(p) if m in args.mode or m not in MODES]
            if modes:  # e.g. decoding (forward only) under --mode fwd+bwd
                found.append(Case(op, device, dt, p, modes))
    if args.shape and not found:
        raise SystemExit(f"error: no selected case takes the parameters of --shape {args.shape}")
    return found, notes


def metadata(args, cases: Sequence[Case]) -> dict[str, Any]:
    def sh(*cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10,
                                  cwd=os.path.dirname(fusedseq.__file__)).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    cpu = sh("sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip() or platform.processor()
    meta: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(getattr(sys, "orig_argv", sys.argv)), "git": sh("git", "describe", "--always", "--dirty"),
        "fusedseq": fusedseq.build_info(), "torch": torch.__version__, "python": platform.python_version(),
        "cpu": {"model": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
                "capability": torch.backends.cpu.get_cpu_capability()},
        "settings": {k: v for k, v in vars(args).items() if k != "handler"}}
    if any(c.device.type == "cuda" for c in cases):
        p = torch.cuda.get_device_properties(0)
        meta["cuda"] = {"name": p.name, "capability": f"{p.major}.{p.minor}", "sm_count": p.multi_processor_count,
                        "memory_gib": round(p.total_memory / 2**30, 1), "l2_bytes": getattr(p, "L2_cache_size", None),
                        "driver": sh("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"),
                        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                        "tf32": [torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32]}
    return meta


def run(args: argparse.Namespace) -> int:
    """Runs the benchmark; prints each op's table as it finishes, then the
    summary. Returns 1 if a fused row failed with an error."""
    cases, notes = collect(args)
    cores, others = os.cpu_count() or 1, LoadMeter.measure(0.5)
    if args.threads is None:  # a thread that waits for a core taken by another process stalls every join
        torch.set_num_threads(min(torch.get_num_threads(), max(1, cores - round(others or 0))))
    else:
        torch.set_num_threads(args.threads)
    meta = metadata(args, cases)
    meta["cpu"]["others_cores_at_start"] = others
    meta["emulated"] = bool(args.emulated)  # the CPU rows' fused kernels ran on the SIMT emulator
    threads = f"{torch.get_num_threads()} CPU threads " + (
        "(--threads)" if args.threads else "(default: one per core that other processes leave free)")
    print(f"fusedseq {fusedseq.__version__} | torch {torch.__version__} | {meta['cpu']['model']} | {threads} | "
          f"other processes used {others or 0:.1f} of {cores} cores at the start"
          + (f" | {meta['cuda']['name']}" if "cuda" in meta else ""))
    if (others or 0) > 0.25:
        notes.append("the cores are shared: rows whose timing the others disturb are re-measured, then "
                     "marked unstable")
    for n in notes:
        print(f"note: {n}")
    budget = QUICK if args.quick else FULL
    rows, group, start = [], [], time.perf_counter()
    # --emulated: the fusedseq ops of the cases (collect kept those with an emulated kernel) run their CUDA
    # kernels on the host emulator.
    emulated_ops_used = sorted({o for c in cases for o in (c.op.cuda_ops or [c.op.name])})
    if args.emulated:
        if not emulated_ops_used:
            raise SystemExit("error: --emulated, but no selected case has an emulated CUDA kernel "
                             f"(fusedseq.emulated.ops() = {emulated_ops()})")
        print(f"note: --emulated: the fused path runs the CUDA kernels of {', '.join(emulated_ops_used)} on the "
              "host emulator (times are the emulator's)")
    with fusedseq.emulated.kernels(emulated_ops_used) if args.emulated else contextlib.nullcontext():
        try:
            for i, case in enumerate(cases):
                t0 = time.perf_counter()
                b = budget if case.device.type == "cpu" or args.quick else Budget(seconds=CUDA_SECONDS)
                if args.budget:
                    b = Budget(**{**vars(b), "seconds": args.budget})
                group += run_case(case, b, args.seed, args.verbose)
                print(f"[{i + 1}/{len(cases)}] {case.op.name} {case.device.type} {case.label} "
                      f"{str(case.dtype).removeprefix('torch.')}: {time.perf_counter() - t0:.1f} s", file=sys.stderr,
                      flush=True)
                if i + 1 == len(cases) or (cases[i + 1].op, cases[i + 1].device) != (case.op, case.device):
                    print(f"\n== {case.op.name} on {case.device} ==\n{format_table(group)}", flush=True)
                    rows, group = rows + group, []
        except KeyboardInterrupt:
            print("\ninterrupted: reporting the cases that finished", file=sys.stderr)
            rows += group
    if rows:
        print(f"\n== summary: fused speed-up (>1: fused faster) ==\n{format_summary(rows)}\n\n{LEGEND}")
    print(f"\n{len(cases)} cases in {time.perf_counter() - start:.0f} s")
    if args.json:
        write_json(args.json, meta, rows)
        print(f"wrote {args.json}")
    if args.plot:
        title = f"fusedseq {fusedseq.__version__}, torch {torch.__version__}, {meta['cpu']['model']}"
        print(f"wrote {args.plot}" if plot(rows, args.plot, title) else f"note: nothing to plot, {args.plot} not written")
    return 1 if any(r.fused and r.status == "error" for r in rows) else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="fusedseq bench", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))
