#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test mlafuse: g++, CMake (>= 3.24, what
# CMakeLists.txt asks for), Ninja, GoogleTest. `--fuzz` adds clang with libFuzzer
# (scripts/fuzz.sh). Works as root, and as a user through sudo; without either it says what to
# install and fails. nvcc is optional: the build scripts look for it on PATH and in
# /usr/local/cuda/bin, and with it the CUDA backend is built for sm_90a too.
set -euo pipefail
fuzz=0
for arg in "$@"; do
  case "$arg" in
    --fuzz) fuzz=1 ;;
    *) echo "setup.sh: unknown argument '$arg' (usage: setup.sh [--fuzz])" >&2; exit 2 ;;
  esac
done

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v ninja >/dev/null || need+=(ninja-build)
command -v g++ >/dev/null || need+=(g++)
# What tests/CMakeLists.txt's find_package(GTest) finds: Debian's libgtest-dev (headers, built
# libraries and CMake config). Sources alone (/usr/src/googletest) are not found by CMake.
# .deps/googletest (sources copied there by hand) is the fallback CMake also takes.
gtest=0
for f in /usr/lib/*/cmake/GTest/GTestConfig.cmake /usr/lib/cmake/GTest/GTestConfig.cmake \
  /usr/local/lib/cmake/GTest/GTestConfig.cmake "$(dirname "$0")/../.deps/googletest/CMakeLists.txt"; do
  [ -f "$f" ] && gtest=1
done
[ "$gtest" = 1 ] || need+=(libgtest-dev libgmock-dev)
if [ "$fuzz" = 1 ]; then
  if ! command -v clang++ >/dev/null; then
    need+=(clang)
  fi
fi

install() {
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
      sudo=(sudo)
    elif command -v sudo >/dev/null && [ -t 0 ]; then
      sudo=(sudo)  # may ask for a password
    else
      echo "setup.sh: missing packages: $*" >&2
      echo "setup.sh: not root and no usable sudo here; install them as root:" >&2
      echo "  apt-get install -y $*" >&2
      exit 1
    fi
  fi
  if ! command -v apt-get >/dev/null; then
    echo "setup.sh: missing: $*; this is not a Debian/Ubuntu machine (no apt-get): install them" \
      "with your package manager" >&2
    exit 1
  fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$@"
}

if [ ${#need[@]} -gt 0 ]; then install "${need[@]}"; fi

# libFuzzer ships apart from clang on Debian (libclang-rt-N-dev, N = clang's major version).
if [ "$fuzz" = 1 ] &&
    [ ! -f "$(clang++ -print-resource-dir)/lib/linux/libclang_rt.fuzzer-x86_64.a" ]; then
  major="$(clang++ -dumpversion | cut -d. -f1)"
  install "libclang-rt-$major-dev"
fi

# CMakeLists.txt needs 3.24; an older distribution CMake gets a clear message, not a configure
# error.
cmake_version="$(cmake --version | head -1 | awk '{print $3}')"
if [ "$(printf '%s\n' 3.24 "$cmake_version" | sort -V | head -1)" != 3.24 ]; then
  echo "setup.sh: CMake $cmake_version is older than 3.24, which mlafuse needs;" \
    "try: python3 -m pip install 'cmake>=3.24'" >&2
  exit 1
fi

if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "setup.sh: ready (CMake $cmake_version; nvcc found: the CUDA backend will be built)"
else
  echo "setup.sh: ready (CMake $cmake_version; no nvcc: CPU-only build)"
fi

# ---- Python plotting: bench/plot.py and its test (ctest plot_py) need python3 with matplotlib.
if ! python3 -c 'import matplotlib' >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  if ! command -v python3 >/dev/null; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3 python3-pip
  fi
  # PyPI first; Debian's own python3 refuses pip installs (externally managed): its package then.
  python3 -m pip install --quiet matplotlib ||
    { $SUDO apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-matplotlib; }
  python3 -c 'import matplotlib'
fi
