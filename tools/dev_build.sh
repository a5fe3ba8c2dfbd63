#!/usr/bin/env bash
# In-tree development build: compiles fusedseq._C into build/dev and copies it
# next to the Python sources, so `PYTHONPATH=python python ...` runs the tree
# as it is without a pip install. Uses the python on PATH (or $PYTHON).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python}
cmake -S . -B build/dev -G Ninja -DPython_EXECUTABLE="$(command -v "$py")" -DSKBUILD_PROJECT_VERSION=0.1.0 \
  -DFUSEDSEQ_CUDA="${FUSEDSEQ_CUDA:-AUTO}" >/dev/null
cmake --build build/dev -j "$(nproc)"
so=$(ls build/dev/_C*.so)
# Copy, then rename: a process importing the old module never sees half a file.
cp "$so" "python/fusedseq/.tmp_$(basename "$so")"
mv "python/fusedseq/.tmp_$(basename "$so")" "python/fusedseq/$(basename "$so")"
echo "built $(basename "$so") -> python/fusedseq/"
