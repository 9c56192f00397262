#!/usr/bin/env bash
# Configures build/ (Release; the CUDA backend too when nvcc is on PATH or in /usr/local/cuda/bin)
# and builds the given targets (default: everything, tests included).
#   bash scripts/build.sh mlafuse      only the CLI (the main job)
# BUILD_DIR and CMAKE_ARGS (extra configure flags, e.g. -DMLAFUSE_CUDA=OFF) are taken from the
# environment.
set -euo pipefail
cd "$(dirname "$0")/.."
# The CUDA toolkit installs nvcc here without putting it on PATH; CMake looks only on PATH.
export PATH="$PATH:/usr/local/cuda/bin"
build="${BUILD_DIR:-build}"
# shellcheck disable=SC2086  # CMAKE_ARGS is a list of flags
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-}
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake --build "$build" -j2 "${targets[@]}"
