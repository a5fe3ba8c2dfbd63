"""The metadata saved with every result file: enough to tell later what
machine, software and settings produced the numbers."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

import fusedseq

from .sdpa import priority_order


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else platform's guess."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _run(cmd: Sequence[str], cwd: Optional[Path] = None) -> Optional[str]:
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def git_state() -> Optional[dict[str, Any]]:
    """Commit and dirty flag of the checkout fusedseq is imported from (or of
    the working directory, for an installed package), or None outside git."""
    for where in (Path(fusedseq.__file__).resolve().parent, Path.cwd()):
        commit = _run(["git", "rev-parse", "HEAD"], cwd=where)
        if commit:
            status = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where)
            return {"commit": commit, "dirty": bool(status), "path": str(where)}
    return None


def _nvidia_driver() -> Optional[str]:
    out = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    return out.splitlines()[0].strip() if out else None


def cuda_info(device: torch.device) -> dict[str, Any]:
    """Name, compute capability, SMs, memory, driver, CUDA/cuDNN versions and
    the TF32 switches (they change fp32 results of cuBLAS/cuDNN paths)."""
    p = torch.cuda.get_device_properties(device)
    return {
        "name": p.name,
        "capability": f"{p.major}.{p.minor}",
        "sm_count": p.multi_processor_count,
        "memory_gib": round(p.total_memory / 2**30, 1),
        "driver": _nvidia_driver(),
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
    }


def load_average() -> Optional[list[float]]:
    """1, 5 and 15-minute load averages (Unix): other work competing for
    the cores makes CPU timings noisy, so the files keep it."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def collect(devices: Sequence[torch.device], settings: dict[str, Any]) -> dict[str, Any]:
    """Everything but the rows: see the module doc."""
    meta: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(getattr(sys, "orig_argv", sys.argv)),
        "git": git_state(),
        "fusedseq": fusedseq.build_info(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": {
            "model": cpu_model(),
            "logical_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "capability": torch.backends.cpu.get_cpu_capability(),
            "load_avg_start": load_average(),
        },
        "devices": {str(d): device_name(d) for d in devices},
        "sdp_priority_order": priority_order(),
        "settings": settings,
    }
    cuda = [d for d in devices if d.type == "cuda"]
    if cuda:
        meta["cuda"] = cuda_info(cuda[0])
    return meta
