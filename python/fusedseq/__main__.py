"""The ``fusedseq`` command (also ``python -m fusedseq``).

    fusedseq bench [options]   time the ops against PyTorch (see --help)
    fusedseq demo NAME [opts]  run one of the examples of SPEC §3 (see demo --help)
    fusedseq train [options]   train a language model, with checkpoints and --resume
    fusedseq info              what this build contains (build_info)

Each subcommand is one ``_add_<name>`` function that declares its options
and sets the handler, registered in ``_SUBCOMMANDS``. Each imports what it
needs inside its own function, so this file stays free of the subcommands'
dependencies (matplotlib, tqdm). A subcommand's module provides
``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Optional, Sequence


def _add_bench(sub: argparse._SubParsersAction) -> None:
    from .bench import cli

    p = sub.add_parser("bench", help="benchmark the ops against PyTorch's paths",
                       description=cli.DESCRIPTION)
    cli.add_arguments(p)
    p.set_defaults(handler=cli.run)


def _info(args: argparse.Namespace) -> int:
    from . import build_info

    print(json.dumps(build_info(), indent=2, default=str))
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print fusedseq.build_info() as JSON")
    p.set_defaults(handler=_info)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    from .demos import cli

    p = sub.add_parser("demo", help="run an example (menu, dynamics, embeddings, attention, lm)",
                       description=cli.DESCRIPTION)
    cli.add_arguments(p)
    p.set_defaults(handler=cli.run)


def _add_train(sub: argparse._SubParsersAction) -> None:
    from .training import cli

    p = sub.add_parser("train", help="train a language model (checkpoints, --resume)",
                       description=cli.DESCRIPTION)
    cli.add_arguments(p)
    p.set_defaults(handler=cli.run)


_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_bench, _add_demo, _add_train, _add_info]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusedseq", description="fusedseq: fused C++/CUDA kernels for RNNs and attention.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``fusedseq`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # the command as given (e.g. for `fusedseq train`'s resume hint)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
