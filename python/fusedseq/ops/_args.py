"""Type checks of the public functions' arguments, before anything touches them.

torch's dispatcher coerces what it can (``None`` or ``1`` for a ``bool``,
``"False"`` for nothing at all) and Python fails late with an unrelated
``AttributeError`` when a list or a NumPy array stands where a tensor should.
Every public op runs its arguments through these first, so a wrong kind of
argument is a ``TypeError`` that names the op and the argument.
"""
from __future__ import annotations

import numbers
from typing import Optional

import torch
from torch import Tensor


def _kind(value) -> str:
    return type(value).__name__


def tensor(op: str, name: str, value, what: str = "a torch.Tensor") -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{op}: argument '{name}' must be {what}, got {_kind(value)}")
    return value


def optional_tensor(op: str, name: str, value, what: str = "a torch.Tensor or None") -> Optional[Tensor]:
    return None if value is None else tensor(op, name, value, what)


def flag(op: str, name: str, value) -> bool:
    """A real bool (``True``/``False``, or a NumPy/torch bool scalar); not
    ``None``, not a string, not an int."""
    if isinstance(value, bool):
        return value
    if isinstance(value, Tensor) and value.dtype == torch.bool and value.numel() == 1 and value.dim() == 0:
        return bool(value)
    if type(value).__name__ == "bool_":  # numpy.bool_, without importing NumPy
        return bool(value)
    raise TypeError(f"{op}: argument '{name}' must be a bool, got {_kind(value)} {value!r}")


def real(op: str, name: str, value) -> float:
    """A real number (int or float, not bool, not a tensor)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: argument '{name}' must be a float, got {_kind(value)}")
    return float(value)


def optional_real(op: str, name: str, value) -> Optional[float]:
    return None if value is None else real(op, name, value)


def integer(op: str, name: str, value) -> int:
    """An int (not bool); torch SymInts pass through (torch.compile)."""
    if isinstance(value, torch.SymInt):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{op}: argument '{name}' must be an int, got {_kind(value)}")
    return int(value)


def string(op: str, name: str, value) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{op}: argument '{name}' must be a str, got {_kind(value)}")
    return value
