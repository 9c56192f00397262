#!/usr/bin/env bash
# Installs a built tree into a fresh temporary prefix and builds and runs examples/cpp_consumer
# against that prefix alone, so a broken install (a missing header, a target that names the
# build or source tree, a package config that does not load) fails CI.
#   bash scripts/check_install.sh [BUILD_DIR]   (default: build; it must be built already)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$(cd "${1:-$root/build}" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"
start=$SECONDS

cmake --install "$build" --prefix "$prefix" >"$work/install.log"

fail() { echo "check_install: $*" >&2; exit 1; }
config="$(find "$prefix" -name mlafuseConfig.cmake)"
[ -n "$config" ] || fail "no mlafuseConfig.cmake under $prefix"
[ -f "$(dirname "$config")/mlafuseConfigVersion.cmake" ] || fail "no mlafuseConfigVersion.cmake"
[ -x "$prefix/bin/mlafuse" ] || fail "no mlafuse CLI in $prefix/bin"
[ -f "$prefix/include/mlafuse/backends/backend.h" ] || fail "public headers not installed"
# Installed targets must point into the prefix only: a path into the source or build tree works
# here but breaks on any other machine.
if grep -rlF -e "$root/" -e "$build/" "$(dirname "$config")"; then
  fail "the installed package config names the source or build tree"
fi
cuda=$(sed -n 's/^set(mlafuse_WITH_CUDA \(.*\))$/\1/p' "$config")
if [ "$cuda" = ON ]; then
  [ -f "$prefix/include/mlafuse/backends/cuda/cuda_backend.h" ] || fail "CUDA headers missing"
else
  [ ! -e "$prefix/include/mlafuse/backends/cuda" ] || fail "CPU-only install ships CUDA headers"
fi

# The installed CLI runs from the prefix.
"$prefix/bin/mlafuse" compile --layers 2 --quant fp8-group128 >"$work/compile.txt" ||
  fail "installed CLI failed: $(cat "$work/compile.txt")"

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$root/examples/cpp_consumer" -B "$work/consumer" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" >"$work/configure.log" ||
  { cat "$work/configure.log"; fail "consumer configure failed"; }
cmake --build "$work/consumer" -j2 >"$work/build.log" ||
  { cat "$work/build.log"; fail "consumer build failed"; }
"$work/consumer/cpp_consumer" | tee "$work/run.txt"
grep -q '^mlafuse consumer: ok$' "$work/run.txt" || fail "consumer did not report ok"
if [ "$cuda" = ON ]; then
  grep -q '^cuda: pass mla-attn-quant-fusion: 2 rewrites' "$work/run.txt" ||
    fail "the consumer did not run the fusion pass against the installed CUDA backend"
fi
echo "check_install: ok (CUDA part: $cuda; $((SECONDS - start)) s)"
