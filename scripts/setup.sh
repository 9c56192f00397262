#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build mlafuse (compiler, CMake, Ninja, GoogleTest).
# nvcc is optional: with it the CUDA backend is built for sm_90a too.
set -euo pipefail
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v ninja >/dev/null || need+=(ninja-build)
command -v g++ >/dev/null || need+=(g++)
[ -f /usr/include/gtest/gtest.h ] || [ -f /usr/src/googletest/CMakeLists.txt ] || need+=(libgtest-dev libgmock-dev)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
# nvcc from the CUDA toolkit is not always on PATH.
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "note: nvcc found at /usr/local/cuda/bin; add it to PATH to build the CUDA backend"
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
