"""What this installation of fusedseq was built with."""
from __future__ import annotations

from typing import Any

import torch

from . import _C, emulated


def build_info() -> dict[str, Any]:
    """Version, torch versions (built against / running), CPU SIMD level,
    whether CUDA kernels were compiled, for which archs, and which ops have
    them. With a GPU present, ``cuda_probe`` says whether this build's code
    runs on it ("ok" or the CUDA error, e.g. a missing arch).
    ``emulated_compiled`` / ``emulated_ops``: whether the CUDA kernels were also
    built for the host SIMT emulator, and for which ops (``fusedseq.emulated``)."""
    info = dict(_C.build_info())
    info["emulated_compiled"] = emulated.available()
    info["emulated_ops"] = emulated.ops()
    info["torch_version_runtime"] = torch.__version__
    info["cuda_available"] = torch.cuda.is_available()
    if info["cuda_compiled"] and torch.cuda.is_available():
        err = _C.cuda_probe(torch.cuda.current_device())
        info["cuda_probe"] = err or "ok"
    return info
