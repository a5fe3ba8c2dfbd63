"""argparse ``type=`` converters shared by the command-line tools (``fusedseq
demo``, ``fusedseq train``): each turns the text into a value or raises
``argparse.ArgumentTypeError`` saying what was expected. Standard library
only: the parser is built for every ``fusedseq`` subcommand."""
from __future__ import annotations

import argparse
import math
from typing import Callable


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An integer >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    return parse


def finite_float(minimum: float = 0.0, *, inclusive: bool, below: float = math.inf) -> Callable[[str], float]:
    """A finite float ``>= minimum`` (``> minimum`` unless ``inclusive``) and ``< below``."""
    low = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
    bounds = f"in [{minimum:g}, {below:g})" if math.isfinite(below) else low

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        above = value >= minimum if inclusive else value > minimum
        if not (math.isfinite(value) and above and value < below):
            raise argparse.ArgumentTypeError(f"expected a finite number {bounds}, got {text!r}")
        return value
    return parse


def device(text: str) -> str:
    """"cpu", "cuda" or "cuda:N" (whether it exists is checked later, so --help works anywhere)."""
    kind, _, index = text.partition(":")
    if (kind == "cpu" and not index) or (kind == "cuda" and (not index or index.isdigit())):
        return text
    raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
