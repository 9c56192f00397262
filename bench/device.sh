#!/usr/bin/env bash
# The one-run GPU script: configure and build (Release, sm_90a), run the GPU tests, run
# compute-sanitizer over the GPU test binaries (memcheck; racecheck for the shared-memory
# kernels) with small shapes, and run every benchmark, printing a short summary last.
#
#   bench/device.sh [build] [test] [sanitize] [bench] [python] [stamps]
#                                      (default: the first four, in that order)
# stamps: the diagnostic build (-DMLAFUSE_SEESAW_STAMPS=ON, in $BUILD-stamps) of bench_mla_decode,
# one process a case of MLAFUSE_STAMPS_CASES (default below), and where each CTA's time goes in
# the attention and the combine of the case's last fused chain (bench/seesaw_stamps.py,
# bench/combine_stamps.py; stamps.txt). Its times are not benchmark results.
# python: pip-installs the Python package with the CUDA backend (offline: wheels carried in .whl/,
# MLAFUSE_PYTHON_TIMEOUT for the build) and runs its pytest suite with torch CUDA tensors, the
# eager-overhead benchmark, the DeepSeek-V3 decode-step example and the tensor-parallel example
# in its one-GPU mode (tp = 2, 4, 8 shards one after another).
#
# Logs and JSON go to $OUT when set, else bench-out/. Benchmarks pair by name: for every
# bench/torch_<name>.py, `python3 bench/torch_<name>.py $OUT/torch_<name>.txt` runs first, then
# the binary bench_<name> with `--torch $OUT/torch_<name>.txt --json $OUT/bench_<name>.json`;
# binaries with no torch script get `--json` alone. Adding a benchmark is adding those files.
# Each phase has a time limit (seconds, env): MLAFUSE_TEST_TIMEOUT, MLAFUSE_SANITIZE_TIMEOUT,
# MLAFUSE_BENCH_TIMEOUT; MLAFUSE_BENCH_ARGS passes extra flags (e.g. --quick) to every binary.
# To run a subset: MLAFUSE_CTEST_REGEX (ctest -R), MLAFUSE_SANITIZE_BINS and MLAFUSE_BENCHES
# (space-separated binary names, e.g. "gpu_quant_test" / "bench_quant"); MLAFUSE_NO_TORCH=1 skips
# the PyTorch baselines.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/cuda/bin"
# With $OUT (the device tool's folder, which returns at most 8 files) everything is written to a
# scratch folder first; the summary, the JSON files and a tarball of all logs are copied at the end.
if [ -n "${OUT:-}" ]; then OUT_DIR=/tmp/mlafuse-device-out; rm -rf "$OUT_DIR"; else OUT_DIR=bench-out; fi
BUILD="${MLAFUSE_BUILD_DIR:-build-device}"
mkdir -p "$OUT_DIR"
PHASES=("$@")
[ ${#PHASES[@]} -eq 0 ] && PHASES=(build test sanitize bench)
want() { local p; for p in "${PHASES[@]}"; do [ "$p" = "$1" ] && return 0; done; return 1; }
SUMMARY="$OUT_DIR/summary.txt"
: > "$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start ))s; }

# Stamped into the benchmark JSON (the device copy has no .git: the caller may set MLAFUSE_COMMIT).
export MLAFUSE_COMMIT="${MLAFUSE_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
export MLAFUSE_DATE="${MLAFUSE_DATE:-$(date -u +%Y-%m-%d)}"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | sed 's/^/gpu: /' | tee -a "$SUMMARY"

if want build; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
    > "$OUT_DIR/build.log" 2>&1
  targets=$(ninja -C "$BUILD" -t targets all 2>/dev/null | grep -oE '^(gpu_[A-Za-z0-9_]+|bench_[A-Za-z0-9_]+):' | tr -d ':' | sort -u)
  if cmake --build "$BUILD" -j16 --target $targets -- -k 0 >> "$OUT_DIR/build.log" 2>&1; then
    note "build: ok ($(echo $targets | wc -w) targets, $(elapsed))"
  else
    note "build: FAILED ($(elapsed)); tail of build.log:"
    grep -E "error|FAILED" "$OUT_DIR/build.log" | head -20 | tee -a "$SUMMARY"
  fi
fi

if want test; then
  # A GPU test that finds no usable GPU fails here instead of skipping (tests/gpu/common).
  MLAFUSE_REQUIRE_GPU=1 timeout "${MLAFUSE_TEST_TIMEOUT:-300}" ctest --test-dir "$BUILD" -L gpu --output-on-failure -j4 \
    ${MLAFUSE_CTEST_REGEX:+-R "$MLAFUSE_CTEST_REGEX"} > "$OUT_DIR/ctest_gpu.log" 2>&1
  rc=$?
  note "gpu tests: rc=$rc, $(grep -E 'tests passed|tests failed' "$OUT_DIR/ctest_gpu.log" | tail -1) ($(elapsed))"
  grep -E '^\s+[0-9]+ - .*\((Failed|Timeout|SEGFAULT|Subprocess aborted|Not Run)' "$OUT_DIR/ctest_gpu.log" | head -20 | tee -a "$SUMMARY"
fi

if want sanitize; then
  : > "$OUT_DIR/sanitizer.log"
  budget="${MLAFUSE_SANITIZE_TIMEOUT:-200}"
  for bin in "$BUILD"/tests/gpu_*_test; do
    [ -x "$bin" ] || continue
    name=$(basename "$bin")
    [ -n "${MLAFUSE_SANITIZE_BINS:-}" ] && [[ " $MLAFUSE_SANITIZE_BINS " != *" $name "* ]] && continue
    MLAFUSE_GPU_TEST_SMALL=1 timeout "$budget" compute-sanitizer --tool memcheck --error-exitcode 9 \
      "$bin" >> "$OUT_DIR/sanitizer.log" 2>&1
    note "memcheck $name: rc=$? ($(elapsed))"
  done
  # Shared-memory kernels: the SIMT GEMM fallback and the MLA decode and prefill kernels.
  for spec in "gpu_linear_test:Linear.Fp8BlockFallbackLayouts:Linear.Nvfp4" "gpu_mla_decode_test:*" \
              "gpu_mla_prefill_test:MlaPrefillSmall.*"; do
    bin="$BUILD/tests/${spec%%:*}"
    filter="${spec#*:}"
    [ -x "$bin" ] || continue
    [ -n "${MLAFUSE_SANITIZE_BINS:-}" ] && [[ " $MLAFUSE_SANITIZE_BINS " != *" ${spec%%:*} "* ]] && continue
    MLAFUSE_GPU_TEST_SMALL=1 timeout "$budget" compute-sanitizer --tool racecheck --error-exitcode 9 \
      "$bin" --gtest_filter="$filter" >> "$OUT_DIR/sanitizer.log" 2>&1
    note "racecheck $(basename "$bin") ($filter): rc=$? ($(elapsed))"
  done
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT_DIR/sanitizer.log" | sort | uniq -c | tee -a "$SUMMARY"
  # Calibration: racecheck on a correct bar.arrive / bar.sync hand-off (the decode kernel's
  # pattern between warpgroups). Hazards it reports there are racecheck's, not the kernel's.
  # Second program: a 64-thread named barrier of warps 0-1, then __syncthreads() exchanges.
  if [ -x "$BUILD/tests/gpu_racecheck_calibration" ]; then
    for mode in handoff partial; do
      compute-sanitizer --tool racecheck "$BUILD/tests/gpu_racecheck_calibration" "$mode" \
        > "$OUT_DIR/racecheck_calibration_$mode.log" 2>&1
      note "racecheck calibration ($mode, correct code): rc=$?, $(grep -E 'RACECHECK SUMMARY' "$OUT_DIR/racecheck_calibration_$mode.log" | sed 's/=* //')"
    done
  fi
fi

if want bench; then
  for bin in "$BUILD"/bench/bench_*; do
    [ -x "$bin" ] || continue
    name=$(basename "$bin")
    [ -n "${MLAFUSE_BENCHES:-}" ] && [[ " $MLAFUSE_BENCHES " != *" $name "* ]] && continue
    short="${name#bench_}"
    args=(--json "$OUT_DIR/$name.json")
    if [ -f "bench/torch_$short.py" ] && [ -z "${MLAFUSE_NO_TORCH:-}" ]; then
      PYTHONUNBUFFERED=1 timeout "${MLAFUSE_BENCH_TIMEOUT:-240}" python3 "bench/torch_$short.py" \
        "$OUT_DIR/torch_$short.txt" > "$OUT_DIR/torch_$short.log" 2>&1
      note "torch_$short.py: rc=$? ($(elapsed))"
      args+=(--torch "$OUT_DIR/torch_$short.txt")
    fi
    timeout "${MLAFUSE_BENCH_TIMEOUT:-240}" "$bin" "${args[@]}" ${MLAFUSE_BENCH_ARGS:-} \
      > "$OUT_DIR/$name.txt" 2>&1
    note "$name: rc=$? ($(elapsed))"
  done
  # Pictures of the run (bench/plot.py: decode vs the floor, roofline, quant GB/s; it reads the
  # decode and quant JSON only).
  python3 bench/plot.py --out "$OUT_DIR" --date "$MLAFUSE_DATE" --commit "$MLAFUSE_COMMIT" \
    $(ls "$OUT_DIR"/bench_mla_decode.json "$OUT_DIR"/bench_quant.json 2>/dev/null) \
    > "$OUT_DIR/plot.log" 2>&1
  note "plot.py: rc=$? ($(elapsed))"
fi

if want python; then
  PY_LOG="$OUT_DIR/python.log"
  : > "$PY_LOG"
  if [ -d .whl ]; then
    # -U for the build tools: the extension needs nanobind's DLPack FP8 codes (nanobind 3.x).
    python3 -m pip install -q --no-index --find-links .whl -U nanobind scikit-build-core \
      >> "$PY_LOG" 2>&1
    python3 -m pip install -q --no-index --find-links .whl pytest ml_dtypes >> "$PY_LOG" 2>&1
  fi
  CMAKE_BUILD_PARALLEL_LEVEL=16 timeout "${MLAFUSE_PYTHON_TIMEOUT:-900}" python3 -m pip install \
    --no-build-isolation --no-deps -C build-dir=build-device-python \
    -C cmake.define.CMAKE_CUDA_ARCHITECTURES=90a -C cmake.define.MLAFUSE_CUDA=ON . >> "$PY_LOG" 2>&1
  note "python package (CUDA): rc=$? ($(elapsed))"
  MLAFUSE_REQUIRE_GPU=1 timeout "${MLAFUSE_TEST_TIMEOUT:-300}" python3 -m pytest python/tests -q \
    -p no:cacheprovider \
    > "$OUT_DIR/pytest.log" 2>&1
  note "pytest: rc=$?, $(tail -1 "$OUT_DIR/pytest.log") ($(elapsed))"
  grep -E '^(FAILED|ERROR) ' "$OUT_DIR/pytest.log" | head -20 | tee -a "$SUMMARY"
  timeout 120 python3 bench/python_overhead.py > "$OUT_DIR/python_overhead.txt" 2>&1
  note "python_overhead.py: rc=$? ($(elapsed))"
  timeout 120 python3 examples/deepseek_v3_decode_step.py > "$OUT_DIR/decode_step.txt" 2>&1
  note "deepseek_v3_decode_step.py: rc=$? ($(elapsed))"
  # Tensor parallelism on one GPU: tp = 2, 4, 8 shards one after another (issue 12).
  timeout 300 python3 examples/deepseek_v3_tp_decode.py --simulate 2,4,8 > "$OUT_DIR/tp_decode.txt" 2>&1
  note "deepseek_v3_tp_decode.py --simulate 2,4,8: rc=$? ($(elapsed))"
  cat "$OUT_DIR/python_overhead.txt" "$OUT_DIR/decode_step.txt" "$OUT_DIR/tp_decode.txt" | tee -a "$SUMMARY"
fi

if want stamps; then
  SBUILD="$BUILD-stamps"
  cmake -S . -B "$SBUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
    -DMLAFUSE_SEESAW_STAMPS=ON > "$OUT_DIR/stamps_build.log" 2>&1 &&
    cmake --build "$SBUILD" -j16 --target bench_mla_decode >> "$OUT_DIR/stamps_build.log" 2>&1
  note "stamps build: rc=$? ($(elapsed))"
  mkdir -p "$OUT_DIR/stamps"
  : > "$OUT_DIR/stamps.txt"
  for c in ${MLAFUSE_STAMPS_CASES:-128,4096,128 128,1024,128 16,4096,128 1,4096,128 128,4096,16}; do
    base="$OUT_DIR/stamps/${c//,/_}"
    MLAFUSE_STAMPS_FILE="$base.attn.bin" MLAFUSE_COMBINE_STAMPS_FILE="$base.combine.bin" \
      timeout "${MLAFUSE_STAMPS_TIMEOUT:-60}" "$SBUILD/bench/bench_mla_decode" --case "$c" \
      > "$base.txt" 2>&1
    note "stamps $c: rc=$? ($(elapsed))"
    { python3 bench/seesaw_stamps.py "$base.attn.bin" &&
      python3 bench/combine_stamps.py "$base.combine.bin" "$base.attn.bin"; } >> "$OUT_DIR/stamps.txt" 2>&1
  done
  cat "$OUT_DIR/stamps.txt" | tee -a "$SUMMARY"
fi

echo
echo "==== summary ($(elapsed)) ===="
cat "$SUMMARY"
if want bench; then
  # Each benchmark prints its table last: show it from its header on.
  for f in "$OUT_DIR"/bench_*.txt; do
    [ -f "$f" ] || continue
    echo
    awk 'BEGIN{p=0} /^$/{p=1} p' "$f" | tail -n 40
  done
fi
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  cp "$SUMMARY" "$OUT/" 2>/dev/null
  ls "$OUT_DIR"/*.json 2>/dev/null | head -2 | xargs -r cp -t "$OUT/"
  cp "$OUT_DIR"/*.png "$OUT/" 2>/dev/null  # 3 plots: with the summary, 2 JSON and logs, 7 files
  tar czf "$OUT/logs.tgz" -C "$OUT_DIR" . 2>/dev/null
fi
