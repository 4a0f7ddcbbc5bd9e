#!/usr/bin/env bash
# CI stages: the CPU test suite under sanitizers (issue 15).
#   asan  build-asan/: AddressSanitizer + UndefinedBehaviorSanitizer (gcc), every test but the
#         gpu label's (CI configures it CPU-only, -DELMO_CUDA=OFF, where there are none)
#   tsan  build-tsan/: ThreadSanitizer (gcc), the tests of comm/ (rendezvous, launcher, dense
#         all-reduce, sparse exchange, in one process and across processes) and of the dense
#         all-reduce overlapped with the backward (app/dense_overlap)
# Findings fail the stage (halt_on_error); suppressions, for third-party code only and each with
# its reason, are in tests/sanitizers/. Extra arguments go to cmake when a tree is configured,
# e.g. the CPU-only configuration (as .ci/run does):
#   .ci/sanitize.sh asan -DELMO_CUDA=OFF          .ci/sanitize.sh all
set -euo pipefail
cd "$(dirname "$0")/.."

stage=${1:-all}
[ $# -gt 0 ] && shift
jobs=${ELMO_BUILD_JOBS:-$(nproc)}
supp=$PWD/tests/sanitizers

configure() {  # configure <dir> <flags> [cmake args...]
  local dir=$1 flags=$2
  shift 2
  if [ ! -f "$dir/CMakeCache.txt" ]; then
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
          "-DCMAKE_CXX_FLAGS=$flags" "-DCMAKE_C_FLAGS=$flags" \
          "-DCMAKE_EXE_LINKER_FLAGS=$flags" "-DCMAKE_SHARED_LINKER_FLAGS=$flags" "$@"
  fi
}

run_asan() {
  local start=$SECONDS
  configure build-asan "-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" "$@"
  cmake --build build-asan --target elmo_tests -j "$jobs"
  local built=$SECONDS
  ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=0:strict_string_checks=1" \
  LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$supp/ubsan.supp" \
    ctest --test-dir build-asan -LE gpu -j "$jobs" --output-on-failure
  echo ".ci/sanitize.sh asan: built in $((built - start)) s, tests in $((SECONDS - built)) s"
}

run_tsan() {
  local start=$SECONDS
  configure build-tsan "-fsanitize=thread -fno-omit-frame-pointer" "$@"
  cmake --build build-tsan --target test_comm test_comm_dist test_app -j "$jobs"
  local built=$SECONDS
  # UCX's memory hooks (libucm) catch the madvise glibc makes on a thread's stack as the thread
  # exits and take a pthread rwlock there, which TSan intercepts for a thread it has already
  # finished: every test of a binary that loads UCX crashed at exit (SIGSEGV in
  # __tsan::MutexPreReadLock from ucm_madvise; seen with gcc 12's TSan, glibc 2.36, kernel 6.18).
  # The hooks only serve UCX's registration cache, which the TCP transport we use does not need.
  UCX_MEM_MMAP_HOOK_MODE=none \
  TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$supp/tsan.supp" \
    ctest --test-dir build-tsan -j "$jobs" --output-on-failure -E build_test_binaries \
          -R '^(Rendezvous|RendezvousDist|LaunchPlan|LocalLauncher|Scheduler|Topology|GlooAllreduce|SparseExchange[A-Za-z]*|DenseOverlap)\.' \
          -FA '.*'
  echo ".ci/sanitize.sh tsan: built in $((built - start)) s, tests in $((SECONDS - built)) s"
}

case "$stage" in
  asan) run_asan "$@" ;;
  tsan) run_tsan "$@" ;;
  all) run_asan "$@"; run_tsan "$@" ;;
  *) echo "usage: .ci/sanitize.sh [asan|tsan|all] [cmake arguments...]" >&2; exit 2 ;;
esac
