#!/usr/bin/env bash
# ASan + UBSan run of the op tests (CI step; run locally after tools/setup.sh).
# Builds the extension with FUSEDSEQ_SANITIZE=ON into build/sanitize, puts it
# beside a copy of the Python package, and runs the op tests against it with
# libasan preloaded (python is not instrumented). Any report fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
py=$PWD/${FUSEDSEQ_VENV:-.venv}/bin/python
start=$SECONDS
# Only the CPU kernel variant this CPU runs (the tests exercise no other; the
# baseline variant's own run is CI step 4's).
isa=baseline
grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo && isa=avx2
PATH="$(dirname "$py"):$PATH" cmake -S . -B build/sanitize -G Ninja -DPython_EXECUTABLE="$py" \
  -DSKBUILD_PROJECT_VERSION=0.1.0 -DFUSEDSEQ_CUDA=OFF -DFUSEDSEQ_SANITIZE=ON -DCMAKE_BUILD_TYPE=Release \
  -DFUSEDSEQ_CPU_ISA_ONLY="$isa" \
  -DFUSEDSEQ_EMULATED=ON >/dev/null  # (the CUDA kernels' emulated ops too; the torch-free emulator tests have
                                     #  their own ASan build: tools/ci_emulated.sh)
PATH="$(dirname "$py"):$PATH" cmake --build build/sanitize -j 2
pkg=build/sanitize/pkg
rm -rf "$pkg" && mkdir -p "$pkg"
cp -r python/fusedseq "$pkg/"
rm -f "$pkg"/fusedseq/_C*.so "$pkg"/fusedseq/_emulated*.so
cp build/sanitize/_C*.so build/sanitize/_emulated*.so "$pkg/fusedseq/"
echo "sanitized build: $((SECONDS - start)) s"
# detect_leaks=0: CPython and torch keep memory until exit by design. libstdc++ is
# preloaded too: python does not link it, and without it ASan's __cxa_throw
# interceptor finds no real __cxa_throw and aborts on the first C++ exception.
export LD_PRELOAD="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libstdc++.so)" \
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:print_summary=1 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 PYTHONPATH="$PWD/$pkg"
"$py" -c "import fusedseq, sys; so = fusedseq._C.__file__; print(so); sys.exit('sanitize' not in so)"
# Two runs: the CPU kernels' op tests (their emulated variants aside: hundreds of
# them, minutes each under ASan), then the CUDA kernels' own grids on the emulator.
# FUSEDSEQ_SANITIZE_TESTS replaces both with one run of its pytest arguments.
if [ -n "${FUSEDSEQ_SANITIZE_TESTS:-}" ]; then
  # shellcheck disable=SC2086
  "$py" -m pytest -q -p no:cacheprovider $FUSEDSEQ_SANITIZE_TESTS
else
  "$py" -m pytest -q -p no:cacheprovider -m "not emulated" tests/test_rnn_cell.py tests/test_rnn.py \
    tests/test_attention.py tests/test_bad_input.py tests/test_properties.py tests/test_lstm_gru.py tests/test_lstm_paths.py \
    tests/test_bad_input_gated.py
  "$py" -m pytest -q -p no:cacheprovider -m emulated tests/test_attention_cuda.py tests/test_rnn_cuda.py \
    tests/test_lstm_gru_cuda.py
fi
echo "sanitizer step: $((SECONDS - start)) s"
