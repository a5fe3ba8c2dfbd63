"""The fragment maps of csrc/emu/fragments.h (the emulator's and the kernels'
reading of the PTX ISA) against CuTe's MMA and copy traits, element by element:
mma.m16n8k16 A/B/C (bf16 and fp16) and ldmatrix x1/x2/x4, plain and .trans.

Needs the nvidia-cutlass wheel (a test-only dependency: tools/setup.sh installs
it; its CuTe headers are under cutlass_library/source/include) and the CUDA
toolkit's headers (include/cccl and include), found behind the nvcc on PATH as
CMakeLists.txt finds them. Host code only: no GPU, no nvcc compile."""
from __future__ import annotations

import hashlib
import os
import pathlib
import re
import shutil
import subprocess

import pytest

from emulated import build

pytestmark = pytest.mark.emulated

# Map -> elements compared: 32 lanes x (8 A + 4 B + 4 C) for mma; for ldmatrix
# xN, the 8N address lanes and 32 lanes x N registers x 2 halves.
MAPS = {"mma.m16n8k16 bf16 A/B/C": 512, "mma.m16n8k16 fp16 A/B/C": 512, "ldmatrix.x1": 72, "ldmatrix.x2": 144,
        "ldmatrix.x4": 288, "ldmatrix.x1.trans": 72, "ldmatrix.x2.trans": 144, "ldmatrix.x4.trans": 288}


def cute_include() -> pathlib.Path | None:
    try:
        import cutlass_library
    except ImportError:
        return None
    inc = pathlib.Path(cutlass_library.__file__).parent / "source" / "include"
    return inc if (inc / "cute" / "atom" / "mma_traits_sm80.hpp").exists() else None


def cuda_toolkit() -> pathlib.Path | None:
    """The real toolkit behind the nvcc on PATH (which may be a wrapper)."""
    nvcc = os.environ.get("CUDACXX") or shutil.which("nvcc")
    if not nvcc:
        return None
    dry = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull], capture_output=True, text=True)
    m = re.search(r"_HERE_=(\S+)", dry.stdout + dry.stderr)
    root = pathlib.Path(m.group(1)).parent if m else pathlib.Path(nvcc).resolve().parent.parent
    return root if (root / "include" / "cccl").is_dir() else None


@pytest.fixture(scope="module")
def cross_check():
    if build.compiler() is None:
        pytest.skip("no C++ compiler")
    cute, cuda = cute_include(), cuda_toolkit()
    if cute is None:
        pytest.skip("nvidia-cutlass is not installed (pip install nvidia-cutlass; tools/setup.sh does)")
    if cuda is None:
        pytest.skip("no CUDA toolkit headers (include/cccl) found behind nvcc")
    src = build.ROOT / "tests" / "emulated" / "cute_fragments.cpp"
    inputs = src.read_bytes() + (build.CSRC / "emu" / "fragments.h").read_bytes() + str([cute, cuda]).encode()
    exe = build.BUILD / f"cute_fragments-{hashlib.sha256(inputs).hexdigest()[:20]}"
    if not exe.exists():
        build.BUILD.mkdir(parents=True, exist_ok=True)
        tmp = exe.with_suffix(".tmp")
        cmd = [build.compiler(), "-std=c++20", "-O0", f"-I{cute}", f"-I{cuda / 'include' / 'cccl'}",
               f"-I{cuda / 'include'}", f"-I{build.CSRC}", str(src), "-o", str(tmp)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-4000:]
        os.replace(tmp, exe)
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    return r


def test_the_check_can_fail(cross_check):
    assert "PASS control: a swapped C map differs from CuTe in 64 of 128 elements" in cross_check.stdout


@pytest.mark.parametrize("fragment", MAPS)
def test_fragment_map_matches_cute(cross_check, fragment):
    line = next((l for l in cross_check.stdout.splitlines() if l.split(":")[0].endswith(" " + fragment)), None)
    assert line is not None, cross_check.stdout + cross_check.stderr
    assert line == f"PASS {fragment}: {MAPS[fragment]} elements", line
