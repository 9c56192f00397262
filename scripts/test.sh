#!/usr/bin/env bash
# The test procedure, the same for a newcomer (README) and CI (.ci/run): build everything in
# build/ and run every test; GPU tests (ctest label `gpu`) skip where no Hopper GPU is present, and
# the skip reasons are printed after the summary.
#   bash scripts/test.sh              the suite, then the Python package's (what the README runs)
#   bash scripts/test.sh --sanitize   the CPU suite built with ASan + UBSan in build-asan/
#                                     (any finding fails its test)
set -euo pipefail
cd "$(dirname "$0")/.."
exclude=()
if [ "${1:-}" = --sanitize ]; then
  export BUILD_DIR=build-asan CMAKE_ARGS="-DMLAFUSE_CUDA=OFF -DMLAFUSE_SANITIZE=ON"
  # detect_leaks: the tests free what they allocate; halt_on_error: the first finding fails.
  export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=1"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  # The two runs of the full-size default job take 2.5 minutes each under ASan; the same code
  # runs there at H=16 (RunCli.*, FusionE2e*), and the plain suite runs them at full size.
  exclude=(-E 'RunCli\.(NoArgumentsRunsTheDefaultJob|JsonIsOneObjectWithTheResults)')
elif [ $# -gt 0 ]; then
  echo "test.sh: unknown argument '$1' (usage: test.sh [--sanitize])" >&2
  exit 2
fi
build="${BUILD_DIR:-build}"
bash scripts/build.sh
status=0
ctest --test-dir "$build" --output-on-failure -j2 "${exclude[@]}" || status=$?
# ctest lists skipped tests without their reason; gtest printed it on the line after "Skipped".
log="$build/Testing/Temporary/LastTest.log"
if [ -f "$log" ] && grep -qE ': Skipped$' "$log"; then
  echo "Skipped tests, by reason:"
  grep -A1 -E ': Skipped$' "$log" | grep -vE ': Skipped$|^--$' | sort | uniq -c | sed 's/^/  /'
fi
# The Python package (CPU-only wheel) and its pytest suite; not under the sanitizers.
if [ "${1:-}" != --sanitize ]; then
  bash scripts/test_python.sh || status=$?
fi
exit "$status"
