"""Command-line options of ``python -m fusedseq bench`` and of the scripts in
``benchmarks/``, and the function that runs a benchmark from them."""
from __future__ import annotations

import argparse
import os
from dataclasses import asdict, replace
from typing import Any, Optional, Sequence

import torch

from . import env
from .flops import MODES
from .plot import plot_speedups
from .report import format_summary, format_table, legend, table_title, write_csv, write_json
from .runner import OPS, BenchConfig, collect_cases, run_cases
from .timing import TimingOptions

# Whole-model benchmarks that are not one op's case: selected with --ops like
# the ops, run after them, reported in their own table and JSON section.
MODEL_BENCHES = ("lm_train",)

DESCRIPTION = ("Time fusedseq's ops against PyTorch's own paths (nn.RNNCell, nn.RNN, an nn.RNNCell loop, "
               "scaled_dot_product_attention and its backends, plain eager code) on the same inputs; "
               "report median time, FLOP rate, speed-up and error vs a float64 reference.")

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float64": torch.float64, "fp64": torch.float64, "double": torch.float64,
}

# Timing effort: full runs aim for stable medians; --quick for a CI smoke
# test that only proves every path runs (whole run well under 30 s on 2 cores).
# GPU calls are short and the CUDA sweeps long, so they get a smaller budget
# (still hundreds of runs for a millisecond kernel).
FULL_TIMING = TimingOptions(budget_s=0.5, min_runs=10, warmup_runs=3, warmup_s=0.1)
FULL_TIMING_CUDA = TimingOptions(budget_s=0.2, min_runs=10, warmup_runs=3, warmup_s=0.05)
QUICK_TIMING = TimingOptions(budget_s=0.02, min_runs=3, warmup_runs=1, warmup_s=0.0, rounds=1)


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_dtypes(text: str) -> list[torch.dtype]:
    try:
        return [_DTYPES[t.lower()] for t in _csv_list(text)]
    except KeyError as e:
        raise argparse.ArgumentTypeError(f"unknown dtype {e.args[0]!r}; choose from {', '.join(_DTYPES)}")


def parse_ops(text: str) -> list[str]:
    ops = _csv_list(text)
    known = (*OPS, *MODEL_BENCHES)
    unknown = [o for o in ops if o not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown op(s) {unknown}; choose from {', '.join(known)}")
    return ops


def parse_modes(text: str) -> list[str]:
    modes = _csv_list(text)
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}")
    return modes


def add_bench_arguments(parser: argparse.ArgumentParser, with_ops: bool = True) -> None:
    """The options every benchmark entry point has (``with_ops``: the
    ``--ops`` selector, which the per-op scripts leave out)."""
    if with_ops:
        parser.add_argument("--ops", type=parse_ops, default=",".join((*OPS, *MODEL_BENCHES)),
                            help="comma-separated ops to run (default: %(default)s; lm_train: "
                                 "training tokens/s of the TransformerLM, fused vs reference backend)")
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default=None,
                        help="where to run (default: cpu, plus cuda when available)")
    parser.add_argument("--dtype", type=parse_dtypes, default=None,
                        help="comma-separated dtypes, e.g. fp32,bf16 (default: fp32 on CPU; "
                             "each op's sweep dtypes on CUDA)")
    parser.add_argument("--mode", type=parse_modes, default=",".join(MODES),
                        help="fwd, fwd+bwd or both (default: both)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny shapes and few runs: a smoke test, not a measurement")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads(N) for the CPU (default: torch's choice)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of timed runs per path (default: 0.5 on CPU, 0.2 on CUDA, "
                             "--quick: 0.02)")
    parser.add_argument("--min-runs", type=int, default=None,
                        help="fewest timed runs per path (default: 10, --quick: 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    parser.add_argument("--json", metavar="PATH", help="write results and metadata as JSON")
    parser.add_argument("--csv", metavar="PATH", help="write one CSV line per row")
    parser.add_argument("--plot", metavar="PATH", help="write a speed-up bar chart (PNG)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--verbose", action="store_true",
                        help="print the traceback of any path that fails unexpectedly")


def add_recurrent_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nonlinearity", choices=["tanh", "relu"], default="tanh",
                        help="RNN activation (default: tanh)")


def add_rnn_compile_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--compile", dest="compiled_loop", action="store_true", default=None,
                       help="also time the nn.RNNCell loop with its step under torch.compile "
                            "(default: on CUDA only)")
    group.add_argument("--no-compile", dest="compiled_loop", action="store_false",
                       help="never time the torch.compile'd loop")


def add_attention_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--causal", choices=["both", "yes", "no"], default="both",
                        help="causal mask: both (default), yes or no")


def _devices(choice: Optional[str]) -> tuple[list[torch.device], list[str]]:
    notes = []
    has_cuda = torch.cuda.is_available()
    if choice == "cuda" and not has_cuda:
        raise SystemExit("error: --device cuda, but torch.cuda.is_available() is False")
    if choice == "all" and not has_cuda:
        notes.append("--device all: no CUDA device here, CPU only")
    devices = []
    if choice in (None, "cpu", "all"):
        devices.append(torch.device("cpu"))
    if has_cuda and choice in (None, "cuda", "all"):
        devices.append(torch.device("cuda", torch.cuda.current_device()))
    return devices, notes


def config_from_args(args: argparse.Namespace, ops: Optional[Sequence[str]] = None,
                     shapes: Optional[dict[str, Sequence[Any]]] = None) -> tuple[BenchConfig, list[str]]:
    """A BenchConfig from parsed options (``ops``/``shapes`` override them:
    the per-op scripts pass their own)."""
    devices, notes = _devices(args.device)

    def timing_options(base: TimingOptions) -> TimingOptions:
        return replace(base,
                       budget_s=args.budget if args.budget is not None else base.budget_s,
                       min_runs=args.min_runs if args.min_runs is not None else base.min_runs)

    timing = timing_options(QUICK_TIMING if args.quick else FULL_TIMING)
    timing_cuda = timing_options(QUICK_TIMING if args.quick else FULL_TIMING_CUDA)
    causal = {"both": (False, True), "yes": (True,), "no": (False,)}[getattr(args, "causal", "both")]
    compiled = getattr(args, "compiled_loop", None)
    if args.quick and compiled is None:
        compiled = False  # compiling takes longer than the whole smoke test may
    config = BenchConfig(
        ops=[o for o in (ops or args.ops) if o in OPS], devices=devices, dtypes=args.dtype, modes=args.mode,
        quick=args.quick, timing=timing, timing_cuda=timing_cuda, shapes=dict(shapes or {}),
        nonlinearity=getattr(args, "nonlinearity", "tanh"), causal=causal,
        compiled_loop=compiled, seed=args.seed, verbose=args.verbose)
    return config, notes


def _settings(config: BenchConfig) -> dict[str, Any]:
    return {
        "ops": list(config.ops), "quick": config.quick, "modes": list(config.modes),
        "dtypes": None if config.dtypes is None else [str(d) for d in config.dtypes],
        "nonlinearity": config.nonlinearity, "causal": list(config.causal),
        "compiled_loop": config.compiled_loop, "seed": config.seed,
        "timing": asdict(config.timing),
        "timing_cuda": asdict(config.timing_cuda) if config.timing_cuda else None,
        "threads": torch.get_num_threads(),
    }


def _busy_note(load: Optional[list[float]], when: str, config: BenchConfig) -> Optional[str]:
    """A warning when other work competes for the cores the CPU rows ran on."""
    cores = os.cpu_count() or 1
    if not load or load[0] < 0.5 * cores or not any(d.type == "cpu" for d in config.devices):
        return None
    return (f"load average {load[0]:.2f} on {cores} cores {when}: other processes compete for the CPU, "
            "so CPU timings may be noisy (a parallel region waits whole scheduler time slices, "
            "~4-16 ms, for a descheduled thread; --threads 1 avoids that)")


def run_bench(args: argparse.Namespace, ops: Optional[Sequence[str]] = None,
              shapes: Optional[dict[str, Sequence[Any]]] = None) -> int:
    """Runs the benchmark the options describe: prints a table per op and
    device as each finishes, then writes the requested files. Returns the
    exit status (1 if any fused row failed with an error)."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config, notes = config_from_args(args, ops, shapes)
    cases, skip_notes = collect_cases(config)
    notes += skip_notes
    meta = env.collect(config.devices, _settings(config))
    names = meta["devices"]

    print(f"fusedseq {meta['fusedseq']['version']} | torch {meta['torch']} | "
          + " | ".join(f"{d}: {n}" for d, n in names.items())
          + f" | {torch.get_num_threads()} CPU threads"
          + (f" | SDPA priority: {', '.join(meta['sdp_priority_order'])}" if meta["sdp_priority_order"] else ""))
    busy = _busy_note(meta["cpu"]["load_avg_start"], "before the run", config)
    if busy:
        notes.append(busy)
    for n in notes:
        print(f"note: {n}")

    def show(group):
        print(f"\n{table_title(group, names)}\n{format_table(group)}", flush=True)

    rows = run_cases(cases, config, on_group_done=show, progress=not args.no_progress)
    summary = format_summary(rows, {op: module.PRIMARY for op, module in OPS.items()})
    if summary:
        print(f"\n== summary: fused speed-up (>1: fused faster) ==\n{summary}")
    if rows:
        print("\n" + legend(rows))

    lm_rows = _run_lm_train(args, config) if "lm_train" in (ops or getattr(args, "ops", ())) else []

    meta["cpu"]["load_avg_end"] = env.load_average()
    busy = _busy_note(meta["cpu"]["load_avg_end"], "at the end of the run", config)
    if busy:
        notes.append(busy)
        print(f"note: {busy}")
    if args.json:
        write_json(args.json, meta, rows, notes, extra={"lm_train": [r.to_dict() for r in lm_rows]})
        print(f"wrote {args.json}")
    if args.csv:
        write_csv(args.csv, rows)
        print(f"wrote {args.csv}")
    if args.plot:
        title = f"fusedseq {meta['fusedseq']['version']}, torch {meta['torch']}, " + ", ".join(names.values())
        if plot_speedups(rows, args.plot, title=title):
            print(f"wrote {args.plot}")
        else:
            print(f"note: nothing to plot, {args.plot} not written")
    failed = [r for r in rows if r.fused and r.status == "error"]
    return 1 if failed else 0


def _run_lm_train(args: argparse.Namespace, config: BenchConfig) -> list:
    """The TransformerLM training-throughput table (see bench/lm_train.py)."""
    from . import lm_train

    devices = [d for d in config.devices]
    dtypes = [d for d in (config.dtypes or [torch.float32]) if d != torch.float64] or [torch.float32]
    rows = []
    for device in devices:
        timing = config.timing_cuda if device.type == "cuda" and config.timing_cuda else config.timing
        rows += lm_train.run([device], dtypes, timing, quick=config.quick, seed=config.seed)
    if rows:
        print("\n== TransformerLM training step (forward + backward + AdamW), "
              "backend='fused' vs 'reference' ==")
        print(lm_train.format_rows(rows), flush=True)
    return rows


def add_all_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option of ``fusedseq bench`` (all ops)."""
    add_bench_arguments(parser)
    add_recurrent_arguments(parser)
    add_rnn_compile_arguments(parser)
    add_attention_arguments(parser)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m fusedseq.bench``: the same as ``python -m fusedseq bench``."""
    parser = argparse.ArgumentParser(prog="fusedseq bench", description=DESCRIPTION)
    add_all_arguments(parser)
    return run_bench(parser.parse_args(argv))

