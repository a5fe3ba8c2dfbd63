#!/usr/bin/env bash
# One-step set-up on a fresh machine: a virtual environment in .venv with
# torch and the build tools, then fusedseq built and installed into it.
# Idempotent: re-running only rebuilds what changed.
#
#   FUSEDSEQ_TORCH   pip requirement for torch (default torch==2.13.0, the CPU
#                    build; use torch==2.14.1 for the CUDA 13 build)
#   FUSEDSEQ_VENV    where the environment goes (default .venv)
#   FUSEDSEQ_CUDA    AUTO | ON | OFF (see CMakeLists.txt)
#   FUSEDSEQ_EMULATED ON | OFF: also build the CUDA kernels for the host SIMT
#                    emulator (fusedseq._emulated, for tests; default ON)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${FUSEDSEQ_VENV:-.venv}
torch_req=${FUSEDSEQ_TORCH:-torch==2.13.0}
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
py="$venv/bin/python"
# Build tools first, then the extension without build isolation, against the
# torch installed here: no second torch to install in a build environment.
# (The build runs with any torch >= 2.10 either way: the bindings use only
# the stable ABI. `pip install .` with isolation works too, only slower.)
"$py" -m pip install -q --disable-pip-version-check "$torch_req" numpy pybind11 "scikit-build-core>=0.10" \
  cmake ninja tqdm matplotlib pytest expecttest hypothesis
# Test-only: the transformers integration's tests (fusedseq itself never
# imports it), and nvidia-cutlass, whose CuTe headers check the emulator's
# tensor-core fragment maps (tests/test_fragments_cute.py).
"$py" -m pip install -q --disable-pip-version-check "transformers>=4.56" nvidia-cutlass
# One build folder per environment, so that switching between .venv and
# .venv-cuda (or re-running after a failed build) recompiles only what changed.
"$py" -m pip install -q --disable-pip-version-check --no-build-isolation \
  -Cbuild-dir="build/$(basename "$venv" | sed "s/^\\.//")" .
"$py" -c "import fusedseq; i = fusedseq.build_info(); print('fusedseq', i['version'], 'torch', i['torch_version'], 'cpu isa', i['cpu_isa'], 'of', i['cpu_isas_compiled'], 'cuda', i['cuda_compiled'])"
