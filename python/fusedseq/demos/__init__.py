"""The examples of SPEC §3, run as ``python -m fusedseq demo NAME`` or ``examples/NAME.py``.

Each demo is one module ``fusedseq.demos.<name>`` that provides:

    NAME                    the name on the command line ("menu")
    HELP                    one line for ``fusedseq demo --help``
    add_arguments(parser)   the demo's own options (the shared ones -- --out,
                            --device, --backend, --seed, --quick -- are added
                            by ``_common.add_common_arguments``)
    run(args) -> dict       trains, plots, and returns its metrics; the paths of
                            the PNGs it wrote go under the key "pngs"

The caller (``cli.run_demo``) seeds the random generators, creates ``args.out``,
prints the metrics and writes ``metrics.json``, so ``run`` only computes.

A demo module is imported when the command-line parser is built (its options
must show in ``demo NAME --help``), so it imports only the standard library,
torch and fusedseq at top level; matplotlib and tqdm are imported inside
functions. The registry below names modules rather than importing them, so a
demo that is not written yet, or fails to import, is reported when it is asked
for instead of breaking every other command.
"""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

# Demo name -> module, in the order of SPEC §3.
DEMOS: dict[str, str] = {
    "menu": "fusedseq.demos.menu",
    "dynamics": "fusedseq.demos.dynamics",
    "embeddings": "fusedseq.demos.embeddings",
    "attention": "fusedseq.demos.attention",
    "lm": "fusedseq.demos.lm",
}

_REQUIRED = ("NAME", "HELP", "add_arguments", "run")


class DemoUnavailableError(RuntimeError):
    """A registered demo whose module is missing, fails to import or breaks the contract."""


def check_name(name: str) -> str:
    """Return ``name`` if it is a registered demo, else raise ValueError."""
    if not isinstance(name, str):
        raise TypeError(f"demo name must be a str, got {type(name).__name__}")
    if name not in DEMOS:
        raise ValueError(f"unknown demo {name!r}; choose from {', '.join(DEMOS)}")
    return name


def is_available(name: str) -> bool:
    """Whether the module of demo ``name`` exists (it is not imported)."""
    return importlib.util.find_spec(DEMOS[check_name(name)]) is not None


def load_demo(name: str) -> ModuleType:
    """Import and return the module of demo ``name``.

    Raises ValueError for a name that is not registered and
    DemoUnavailableError (with the reason) when the module is missing, fails
    to import or lacks part of the contract."""
    module_name = DEMOS[check_name(name)]
    if not is_available(name):
        raise DemoUnavailableError(f"demo {name!r} is not available: its module {module_name} does not exist yet")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # any import-time failure: report it as this demo's problem
        raise DemoUnavailableError(f"demo {name!r} failed to import ({module_name}): "
                                   f"{type(e).__name__}: {e}") from e
    missing = [attr for attr in _REQUIRED if not hasattr(module, attr)]
    if missing:
        raise DemoUnavailableError(f"demo module {module_name} lacks {', '.join(missing)} "
                                   f"(a demo module provides {', '.join(_REQUIRED)})")
    return module


__all__ = ["DEMOS", "DemoUnavailableError", "check_name", "is_available", "load_demo"]
