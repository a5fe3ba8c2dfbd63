"""``python -m fusedseq demo NAME [options]`` and the scripts in ``examples/``.

Every demo gets its own sub-parser, so ``fusedseq demo menu --help`` lists the
menu demo's options next to the shared ones (``_common.add_common_arguments``).
This module is imported whenever any fusedseq command builds its parser, so it
imports only the standard library at top level.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Optional, Sequence

DESCRIPTION = ("Run one of fusedseq's examples: each trains a small model on the fused ops, prints its "
               "metrics and writes its plots (PNG) and metrics.json to --out. "
               "`fusedseq demo NAME --help` lists a demo's options.")


def _add_demo_parser(sub: argparse._SubParsersAction, name: str) -> None:
    from . import DemoUnavailableError, load_demo
    from ._common import add_common_arguments

    try:
        module = load_demo(name)
    except DemoUnavailableError as e:
        # Still listed, so that asking for it gives the reason rather than "invalid choice".
        p = sub.add_parser(name, help=f"(unavailable: {e})", description=str(e))
    else:
        p = sub.add_parser(name, help=module.HELP, description=(module.__doc__ or module.HELP).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
    add_common_arguments(p, name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One sub-parser per registered demo, under ``parser``."""
    from . import DEMOS

    sub = parser.add_subparsers(dest="demo", metavar="NAME", required=True,
                                help=f"the demo to run: {', '.join(DEMOS)}")
    for name in DEMOS:
        _add_demo_parser(sub, name)


def run_demo(name: str, args: argparse.Namespace) -> dict:
    """Runs demo ``name`` with parsed ``args``: seeds, creates ``args.out``,
    calls the demo (with ``args.threads`` torch threads), prints its metrics
    and writes ``metrics.json``.
    Returns the metrics (with "pngs", "seconds" and "out" added)."""
    import os

    from . import load_demo
    from ._common import print_metrics, resolve_device, seed_everything, torch_threads, write_metrics_json

    module = load_demo(name)
    resolve_device(args.device)  # fail before any work when CUDA is asked for but absent
    os.makedirs(args.out, exist_ok=True)
    print(f"fusedseq demo {name}: backend={args.backend} device={args.device} seed={args.seed} "
          f"threads={args.threads or 'default'}{' quick' if args.quick else ''} -> {args.out}", flush=True)
    seed_everything(args.seed)
    start = time.perf_counter()
    with torch_threads(args.threads):
        metrics = module.run(args)
    if not isinstance(metrics, dict):
        raise TypeError(f"demo {name!r}: run(args) must return a dict of metrics, got {type(metrics).__name__}")
    metrics = dict(metrics)
    metrics["pngs"] = [str(p) for p in metrics.pop("pngs", [])]
    metrics["seconds"] = round(time.perf_counter() - start, 2)
    metrics["out"] = str(args.out)
    print_metrics(metrics, title=f"metrics of demo {name}:")
    write_metrics_json(metrics, args.out)
    return metrics


def run(args: argparse.Namespace) -> int:
    """Handler of ``fusedseq demo``. Returns 0 on success, 2 for bad options
    found after parsing (e.g. --device cuda without CUDA), 1 when the demo's
    module does not exist yet; a module that exists but fails to import raises."""
    from . import DemoUnavailableError, is_available
    from ._common import DemoArgumentError

    prog = "fusedseq demo"
    try:
        run_demo(args.demo, args)
    except DemoUnavailableError as e:
        if is_available(args.demo):
            raise  # the module exists but is broken: show the traceback
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except DemoArgumentError as e:
        print(f"{prog} {args.demo}: error: {e}", file=sys.stderr)
        return 2
    return 0


def main_for(name: str, argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``examples/<name>.py``: the same options and code as
    ``fusedseq demo <name>``."""
    from . import load_demo
    from ._common import add_common_arguments

    module = load_demo(name)
    parser = argparse.ArgumentParser(prog=f"examples/{name}.py",
                                     description=(module.__doc__ or module.HELP).strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    add_common_arguments(parser, name)
    args = parser.parse_args(argv)
    args.demo = name
    return run(args)
