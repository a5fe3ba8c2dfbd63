"""fusedseq's CUDA kernels on the CPU, for tests.

The same ``.cu`` source that nvcc compiles for the GPU is compiled by the host
compiler against a SIMT emulator (``csrc/emu/``: CUDA threads as fibers, warp
collectives and tensor-core fragments computed from the PTX ISA layouts), and
registered as torch ops that take CPU tensors:

    torch.ops.fusedseq_emulated.<op>           the CUDA kernel of torch.ops.fusedseq.<op>,
                                               with exactly its schema (``ops()`` lists them)
    torch.ops.fusedseq_selftest_emulated.<op>  the self-test kernels (csrc/cuda/selftest/)

It is slow (every CUDA thread is a fiber) and meant for small shapes. The
schedule comes from the environment at every launch: FUSEDSEQ_EMU_SCHEDULE
(round-robin | warp0-ahead | random), FUSEDSEQ_EMU_CP_ASYNC (wait | issue),
FUSEDSEQ_EMU_SEED. Emulator reports (deadlocks, divergent collectives,
misaligned addresses) raise RuntimeError. Built unless FUSEDSEQ_EMULATED=OFF.
"""
from __future__ import annotations

import contextlib
import functools
import warnings
from typing import Iterator, Sequence

import torch


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """Whether this build has the emulated library (importing it registers its ops)."""
    try:
        from . import _emulated  # noqa: F401
    except ImportError:
        return False
    return True


def ops() -> list[str]:
    """The fusedseq ops whose CUDA kernel is emulated (none until a CUDA kernel exists)."""
    if not available():
        return []
    from . import _emulated
    return list(_emulated.cuda_ops())


@contextlib.contextmanager
def kernels(op_names: Sequence[str]) -> Iterator[None]:
    """While active, ``torch.ops.fusedseq.<op>`` on CPU tensors runs the op's
    CUDA kernel on the host emulator (``torch.ops.fusedseq_emulated.<op>``, the
    same schema) instead of its CPU kernel; everything above the kernel
    (checks, autograd, fake kernels, autocast, torch.compile) stays the path
    users take. For tests and the benchmark harness's ``--emulated`` run."""
    available()  # importing the library registers torch.ops.fusedseq_emulated.*
    lib = torch.library.Library("fusedseq", "IMPL")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Oo]verrid", category=UserWarning)
            for op in op_names:
                lib.impl(op, getattr(torch.ops.fusedseq_emulated, op).default, "CPU")
        yield
    finally:
        lib._destroy()
