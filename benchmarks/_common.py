"""The bench_*.py scripts: ``python -m fusedseq bench --ops OP`` with the
script's own examples in --help; run from a checkout, they find the in-tree
package (``python/``, built with tools/dev_build.sh) when none is installed."""
from __future__ import annotations

import sys
from pathlib import Path


def bench(op: str, doc: str) -> int:
    try:
        import fusedseq  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
    import argparse

    from fusedseq.bench import cli

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(["--ops", op, *sys.argv[1:]]))
