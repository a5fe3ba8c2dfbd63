"""Builds the torch-free emulated test programs with the host compiler.

The programs (tests/emulated/*.cpp) link the self-test kernels
(csrc/cuda/selftest/*.cu) and the op kernels they drive (csrc/cuda/rnn.cu,
gated_rnn.cu),
compiled as C++ against the emulator, and the
emulator's implementation (csrc/emu/emu.cpp). Objects are cached under
build/emulated-tests/ by a hash of their source, every header they may include
and the flags, so a mutant (one kernel file compiled with
-DFUSEDSEQ_MUTANT_<name>) recompiles one file, and a second run nothing.

FUSEDSEQ_EMU_SANITIZE=address,undefined builds everything with those
sanitizers (CI's ASan+UBSan step); CXX picks the compiler (default g++).
"""
from __future__ import annotations

import functools
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Optional, Sequence

ROOT = pathlib.Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
BUILD = ROOT / "build" / "emulated-tests"
KERNELS = tuple(sorted((CSRC / "cuda" / "selftest").glob("*.cu"))) + (CSRC / "cuda" / "rnn.cu",
                                                                      CSRC / "cuda" / "gated_rnn.cu")
EMULATOR_IMPL = CSRC / "emu" / "emu.cpp"
JOBS = 2  # the CI machine (and the shared development machine) has two cores


def compiler() -> Optional[str]:
    return shutil.which(os.environ.get("CXX", "g++"))


def sanitizers() -> str:
    return os.environ.get("FUSEDSEQ_EMU_SANITIZE", "")


def flags() -> list[str]:
    f = ["-std=c++20", "-O1", "-g", "-pthread", f"-I{CSRC}", "-Wall", "-Wextra"]
    if sanitizers():
        f += [f"-fsanitize={sanitizers()}", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]
    return f


@functools.lru_cache(maxsize=None)
def _headers_digest() -> str:
    h = hashlib.sha256()
    for p in sorted(CSRC.rglob("*")):
        if p.suffix in {".h", ".cuh"}:
            h.update(str(p.relative_to(ROOT)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _object(src: pathlib.Path, defines: Sequence[str] = ()) -> pathlib.Path:
    cmd_flags = flags() + [f"-D{d}" for d in defines]
    key = hashlib.sha256("\0".join([_headers_digest(), src.read_text(), *cmd_flags]).encode()).hexdigest()[:20]
    out = BUILD / f"{src.stem}-{key}.o"
    if out.exists():
        return out
    BUILD.mkdir(parents=True, exist_ok=True)
    lang = ["-x", "c++"] if src.suffix == ".cu" else []
    with tempfile.NamedTemporaryFile(dir=BUILD, suffix=".o", delete=False) as tmp:
        pass
    try:
        subprocess.run([compiler(), *cmd_flags, *lang, "-c", str(src), "-o", tmp.name], check=True,
                       capture_output=True, text=True)
    except subprocess.CalledProcessError as e:
        os.unlink(tmp.name)
        raise RuntimeError(f"compiling {src.relative_to(ROOT)} failed:\n{e.stderr[-4000:]}") from None
    os.replace(tmp.name, out)  # atomic: a concurrent build never sees half an object
    return out


def program(main: str, *, kernels: bool = True, mutant: Optional[str] = None,
            mutant_file: Optional[str] = None) -> pathlib.Path:
    """Builds tests/emulated/<main>.cpp (+ the self-test kernels when
    ``kernels``), with ``mutant`` planted in the kernel file named <mutant_file>,
    and returns the executable's path. (``mutant_file`` names a file of KERNELS.)"""
    if compiler() is None:
        raise RuntimeError(f"no C++ compiler ({os.environ.get('CXX', 'g++')}) on PATH")
    jobs: list[tuple[pathlib.Path, tuple[str, ...]]] = [(ROOT / "tests" / "emulated" / f"{main}.cpp", ()),
                                                        (EMULATOR_IMPL, ())]
    for k in KERNELS if kernels else ():
        planted = mutant is not None and k.name == mutant_file
        jobs.append((k, (f"FUSEDSEQ_MUTANT_{mutant}",) if planted else ()))
    if mutant is not None and not any(k.name == mutant_file for k in KERNELS):
        raise ValueError(f"no kernel file {mutant_file!r} for mutant {mutant!r}")
    with ThreadPoolExecutor(JOBS) as pool:
        objects = list(pool.map(lambda j: _object(*j), jobs))
    key = hashlib.sha256("\0".join([str(o) for o in objects] + flags()).encode()).hexdigest()[:20]
    exe = BUILD / f"{main}{'-' + mutant if mutant else ''}-{key}"
    if not exe.exists():
        tmp = exe.with_suffix(".tmp")
        link = [compiler(), *flags(), *map(str, objects), "-o", str(tmp)]
        subprocess.run(link, check=True, capture_output=True, text=True)
        os.replace(tmp, exe)
    return exe


def run(exe: pathlib.Path, args: Iterable[str] = (), *, schedule: Optional[str] = None,
        landing: Optional[str] = None, seed: Optional[int] = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs an emulated program; the schedule is the environment's (CI sets
    FUSEDSEQ_EMU_SCHEDULE / FUSEDSEQ_EMU_CP_ASYNC) unless given."""
    env = dict(os.environ)
    for name, value in (("FUSEDSEQ_EMU_SCHEDULE", schedule), ("FUSEDSEQ_EMU_CP_ASYNC", landing),
                        ("FUSEDSEQ_EMU_SEED", seed)):
        if value is not None:
            env[name] = str(value)
    if sanitizers():
        # A block stopped by an error abandons its fibers with whatever they
        # had allocated (by design, on error paths only): no leak checking.
        # libsanitizer's built-in symbolizer can hang on this system's
        # libstdc++ debuglink; addr2line does not.
        opts = ["detect_leaks=0"]
        if shutil.which("addr2line"):
            opts.append(f"external_symbolizer_path={shutil.which('addr2line')}")
        env.setdefault("ASAN_OPTIONS", ":".join(opts))
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout, env=env)
