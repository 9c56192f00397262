#!/usr/bin/env bash
# Builds the Python package (pip install .) and runs its pytest suite (python/tests).
# CPU-only by default: the CUDA objects are already compiled and tested by the CMake build, and
# building them again for the wheel would double CI's longest step. MLAFUSE_PYTHON_CUDA=ON builds
# the wheel with the CUDA backend (the GPU machine: see the README's Python section).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
# What the build and the tests import; --no-build-isolation then builds with these.
"$py" -m pip install -q nanobind scikit-build-core numpy pytest ml_dtypes
cuda=${MLAFUSE_PYTHON_CUDA:-OFF}
start=$(date +%s)
"$py" -m pip install -q --no-build-isolation --no-deps . -C cmake.define.MLAFUSE_CUDA="$cuda"
echo "python package built in $(( $(date +%s) - start )) s (MLAFUSE_CUDA=$cuda)"
rc=0
"$py" -m pytest python/tests -q -p no:cacheprovider || rc=$?
# pytest exits 5 when it collected nothing: for this suite that is a failure, not a pass.
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests from python/tests" >&2
  exit 1
fi
exit "$rc"
