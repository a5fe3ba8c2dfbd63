#!/usr/bin/env bash
# CI for the CUDA kernels without a GPU, called by .ci/run after the README's
# test command (which has already run every emulated test under the default
# schedule: round-robin, cp.async landing at wait_group):
#   a. the emulated tests again under the second schedule: warp 0 runs ahead,
#      cp.async lands at issue (each schedule catches bugs the other misses;
#      csrc/emu/README.md has the table);
#   b. an ASan+UBSan build of the torch-free emulated tests (the emulator's
#      checks, the self-test kernels, and the mutants only ASan catches);
#   c. the emulator's cost per operation, printed for the record.
#   tools/ci_emulated.sh [PYTHON]   (default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-.venv/bin/python}
t0=$SECONDS

echo "-- emulated tests: warp 0 ahead, cp.async landing at issue"
FUSEDSEQ_EMU_SCHEDULE=warp0-ahead FUSEDSEQ_EMU_CP_ASYNC=issue "$py" -m pytest -q -p no:cacheprovider -m emulated tests/
t1=$SECONDS

echo "-- emulated tests built with ASan+UBSan (round-robin and warp 0 ahead)"
FUSEDSEQ_EMU_SANITIZE=address,undefined "$py" -m pytest -q -p no:cacheprovider tests/test_emulator.py \
  tests/test_mutations.py
FUSEDSEQ_EMU_SANITIZE=address,undefined FUSEDSEQ_EMU_SCHEDULE=warp0-ahead FUSEDSEQ_EMU_CP_ASYNC=issue \
  "$py" -m pytest -q -p no:cacheprovider tests/test_emulator.py
t2=$SECONDS

echo "-- emulator cost per operation (CPU time; 128-thread block, 8x128 grid)"
PYTHONPATH=tests "$py" -c "
from emulated import build
print(build.run(build.program('emulator_checks', kernels=False), ['bench']).stdout, end='')"
echo "-- emulated CI: second schedule $((t1 - t0)) s, ASan+UBSan $((t2 - t1)) s, total $((SECONDS - t0)) s"
