#!/usr/bin/env bash
# Installs the Debian packages elmo_fast builds against (only those missing) and builds build/
# in Release. Idempotent: a second run with nothing changed takes seconds.
# Needs the CUDA toolkit (nvcc) on PATH or in /usr/local/cuda; it is not installed from here.
set -euo pipefail
cd "$(dirname "$0")"

packages=(build-essential cmake pkg-config libopenblas-dev libcli11-dev libtomlplusplus-dev
          libhdf5-dev libucx-dev libgloo-dev libgtest-dev libgmock-dev nlohmann-json3-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup.sh: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
fi

if ! command -v nvcc >/dev/null 2>&1; then
  if [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH=/usr/local/cuda/bin:$PATH
  else
    echo "setup.sh: nvcc not found: install the CUDA toolkit (nvcc, cuBLAS) first" >&2
    exit 1
  fi
fi

jobs=${ELMO_BUILD_JOBS:-$(nproc)}
if [ ! -f build/CMakeCache.txt ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release ${ELMO_CMAKE_ARGS:-}
fi
cmake --build build -j "$jobs"
