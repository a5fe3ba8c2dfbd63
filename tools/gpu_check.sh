#!/usr/bin/env bash
# One command for a machine with a GPU (tools/gpu_check.sh OUTDIR):
#   1. builds fusedseq with CUDA kernels (all cores) into its own venv,
#   2. records the GPU, the build and the compiler's resource report,
#   3. runs the fragment probes on the hardware against the emulator's maps,
#   4. runs the CUDA tests (every test's cuda variant, the self-test kernels),
#   5. runs the benchmarks,
# and writes logs plus a results table (OUTDIR/results.md) under OUTDIR.
# Sized to finish in under 8 minutes on a 16-core H200.
#
# Without a GPU it still builds what it can, says what it skipped and why, and
# exits 0 (1 only if something that could run here failed, e.g. the build).
#
#   FUSEDSEQ_GPU_VENV   venv to build into (default .venv-gpu)
#   FUSEDSEQ_TORCH      torch requirement (default torch==2.14.1, the CUDA 13 build)
#   FUSEDSEQ_CUDA_ARCHS archs to build (default: the GPU's own, else 80;90;90a)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: tools/gpu_check.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
venv=${FUSEDSEQ_GPU_VENV:-.venv-gpu}
py="$venv/bin/python"
jobs=$(nproc)
results="$out/results.md"
failed=0
start=$SECONDS

{
  echo "# fusedseq gpu_check, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo
  echo "| step | result | seconds | log |"
  echo "|---|---|---|---|"
} >"$results"

# step NAME LOG COMMAND...: runs COMMAND with its output in OUTDIR/LOG, adds a row.
step() {
  local name=$1 log=$2
  shift 2
  local t0=$SECONDS
  echo "== $name"
  if "$@" >"$out/$log" 2>&1; then
    echo "| $name | ok | $((SECONDS - t0)) | $log |" >>"$results"
  else
    echo "| $name | FAILED | $((SECONDS - t0)) | $log |" >>"$results"
    echo "   FAILED (see $out/$log)"
    tail -n 20 "$out/$log"
    failed=1
  fi
}

skip() {
  echo "== $1: skipped ($2)"
  echo "| $1 | skipped: $2 | 0 | |" >>"$results"
}

# --------------------------------------------------------------- the GPU --
gpu=""
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >"$out/gpu.txt" 2>&1; then
  gpu=$(head -n 1 "$out/gpu.txt")
  nvidia-smi >>"$out/gpu.txt" 2>&1
  cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')
fi
echo "GPU: ${gpu:-none}"

# ------------------------------------------------------------- the build --
if [ -z "${FUSEDSEQ_CUDA_ARCHS:-}" ]; then
  case "${cc:-}" in
    90) archs="90a" ;;  # an H100/H200: its own arch, with the Hopper-only files
    "") archs="80;90;90a" ;;
    *) archs="$cc" ;;
  esac
else
  archs=$FUSEDSEQ_CUDA_ARCHS
fi
cuda_build=ON
if ! command -v nvcc >/dev/null 2>&1 && [ -z "${CUDACXX:-}" ]; then
  cuda_build=OFF
  skip "CUDA build" "no nvcc on PATH (set CUDACXX)"
fi
export CMAKE_BUILD_PARALLEL_LEVEL=$jobs MAX_JOBS=$jobs
step "build (CUDA=$cuda_build, archs $archs, $jobs jobs)" build.log \
  env FUSEDSEQ_VENV="$venv" FUSEDSEQ_TORCH="${FUSEDSEQ_TORCH:-torch==2.14.1}" FUSEDSEQ_CUDA=$cuda_build \
  FUSEDSEQ_CUDA_ARCHS="$archs" FUSEDSEQ_EMULATED=ON bash tools/setup.sh
if [ ! -x "$py" ]; then
  echo "no environment was built; see $out/build.log"
  echo "| total | $((SECONDS - start)) s | | |" >>"$results"
  cat "$results"
  exit 1
fi
step "build facts" build_info.txt "$py" -c "import fusedseq, json; print(json.dumps(fusedseq.build_info(), indent=1))"
# Registers, spills and shared memory per kernel, from ptxas (-Xptxas -v),
# for the first arch built, with the build's own flags (cmake/cuda.cmake).
ptxas_report() {
  local arch=${archs%%;*} f
  for f in $(find csrc/cuda -name '*.cu' | sort); do
    "${CUDACXX:-nvcc}" -std=c++20 -O3 -lineinfo --expt-relaxed-constexpr -Icsrc \
      -gencode="arch=compute_$arch,code=sm_$arch" -Xptxas -v -c "$f" -o /dev/null \
      >"$out/ptxas.$(basename "$f").txt" 2>&1 &
  done
  wait  # (a file that does not compile has already failed the build step)
  cat "$out"/ptxas.*.cu.txt
  rm -f "$out"/ptxas.*.cu.txt
}
if [ "$cuda_build" = ON ]; then
  step "ptxas resource report" ptxas.txt ptxas_report
fi

# ---------------------------------------------------------- on the GPU --
have_cuda=$("$py" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
if [ "$have_cuda" = 1 ]; then
  step "fragment probes: hardware vs emulator" fragments.log \
    "$py" -m pytest -q -p no:cacheprovider tests/test_emulated_selftest.py -k "fragment" -m cuda
  step "CUDA tests (every cuda variant)" cuda_tests.log \
    "$py" -m pytest -q -p no:cacheprovider -m cuda tests/
  # compute-sanitizer: global out-of-bounds accesses and shared-memory races in a few
  # attention cases (tails, GQA, D = 256: cp.async refills vs warps still reading a stage),
  # and the persistent RNN's grid barrier and staging (both paths, fp32 and bf16; the LSTM and GRU in fp32).
  if command -v compute-sanitizer >/dev/null 2>&1; then
    for tool in memcheck racecheck; do
      step "compute-sanitizer $tool (attention)" "sanitizer_$tool.log" \
        compute-sanitizer --tool "$tool" --error-exitcode 1 "$py" -m pytest -q -p no:cacheprovider -m cuda \
        tests/test_attention_cuda.py -k "forward_backward and (Nq130_Nk130_D128 or Nq17_Nk130_D256 or Nq130_Nk64)"
    done
    for tool in racecheck synccheck memcheck; do
      step "compute-sanitizer $tool: fused RNN" "sanitizer_rnn_$tool.log" \
        compute-sanitizer --tool "$tool" --error-exitcode 1 "$py" tools/rnn_sanitizer_case.py
    done
  else
    skip "compute-sanitizer (attention, fused RNN)" "no compute-sanitizer on PATH"
  fi
  step "benchmarks (CUDA)" bench.log "$py" -m fusedseq bench --device cuda --json "$out/bench.json"
else
  why=${gpu:+torch sees no CUDA device}
  why=${why:-no GPU on this machine}
  skip "fragment probes: hardware vs emulator" "$why"
  skip "CUDA tests" "$why"
  skip "benchmarks" "$why"
fi

# The emulated CUDA tests need no GPU: run them here too (a quick sanity
# check that the build's emulated kernels are the ones the GPU just ran).
step "emulated tests" emulated.log "$py" -m pytest -q -p no:cacheprovider -m emulated tests/

echo "| total | $((SECONDS - start)) s | | |" >>"$results"
echo
cat "$results"
# Without a GPU the GPU steps are skipped (not failures): exit 0 unless a
# step that could run here failed.
exit $failed
