#!/usr/bin/env bash
# Installs the Debian packages elmo_fast builds against (only those missing) and builds build/
# in Release. Idempotent: a second run with nothing changed takes seconds.
#
# CUDA is optional. With the CUDA toolkit (nvcc on PATH or in /usr/local/cuda/bin; it is not
# installed from here) the build has the GPU backend; without it, a CPU-only build. ELMO_CUDA in
# the environment (AUTO, ON or OFF) is passed to CMake as -DELMO_CUDA (default AUTO: use the
# toolkit when there is one); ELMO_CMAKE_ARGS adds any other CMake arguments.
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

cuda_mode=${ELMO_CUDA:-AUTO}
case "${cuda_mode^^}" in
  AUTO | ON | OFF) ;;
  *) echo "setup.sh: ELMO_CUDA=$cuda_mode: use AUTO, ON or OFF" >&2; exit 2 ;;
esac
if [ "${cuda_mode^^}" != OFF ] && ! command -v nvcc >/dev/null 2>&1 &&
   [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
# Without CUDA (ELMO_CUDA=OFF, or AUTO and no toolkit) CMake's configure step says once that this
# is a CPU-only build and how to get the GPU build; setup.sh does not repeat it.
if [ "${cuda_mode^^}" = ON ] && ! command -v nvcc >/dev/null 2>&1; then
  echo "setup.sh: ELMO_CUDA=ON but nvcc is not on PATH or in /usr/local/cuda/bin: install the" \
       "CUDA toolkit (nvcc, cuBLAS, NCCL) first" >&2
  exit 1
fi

jobs=${ELMO_BUILD_JOBS:-$(nproc)}
if [ ! -f build/CMakeCache.txt ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DELMO_CUDA="$cuda_mode" ${ELMO_CMAKE_ARGS:-}
elif [ -n "${ELMO_CUDA:-}" ]; then
  cmake -S . -B build -DELMO_CUDA="$cuda_mode" >/dev/null  # keep build/, change the mode
fi
cmake --build build -j "$jobs"
