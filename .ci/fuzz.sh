#!/usr/bin/env bash
# CI stage: builds the libFuzzer targets of tests/fuzz (clang-14, -fsanitize=fuzzer,address,
# undefined; ELMO_FUZZ=ON in build-fuzz/) and runs each for FUZZ_SECONDS (default 30), two at a
# time. Each starts from its stored inputs (tests/fuzz/corpus/<target>, read-only) plus what it
# found in earlier runs of this build folder (build-fuzz/fuzz-work/<target>). A crash, a leak, a
# timeout (10 s per input), an out-of-memory (2 GiB) or a broken invariant fails the stage and
# leaves the input in build-fuzz/fuzz-artifacts/: fix the bug, then keep the input as
# tests/fuzz/corpus/<target>/crash-<what> (the normal build replays every stored input as the
# tests fuzz_replay_<target>).
#   .ci/fuzz.sh [extra cmake arguments]        FUZZ_SECONDS=N FUZZ_TARGETS="config vocab" ...
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-30}
targets=${FUZZ_TARGETS:-"config vocab corpus token_cache safetensors checkpoint_state bilm_hdf5
                         sparse_wire rendezvous"}
jobs=${ELMO_BUILD_JOBS:-$(nproc)}
for tool in clang-14 clang++-14; do
  command -v "$tool" >/dev/null || { echo ".ci/fuzz.sh: $tool not found (apt-get install clang-14 libclang-rt-14-dev)" >&2; exit 1; }
done

start=$SECONDS
if [ ! -f build-fuzz/CMakeCache.txt ]; then
  cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang-14 \
        -DCMAKE_CXX_COMPILER=clang++-14 -DELMO_FUZZ=ON "$@"
fi
cmake --build build-fuzz --target elmo_fuzzers -j "$jobs"
echo ".ci/fuzz.sh: fuzzers built in $((SECONDS - start)) s"

mkdir -p build-fuzz/fuzz-artifacts build-fuzz/fuzz-logs
export LSAN_OPTIONS="suppressions=$PWD/tests/fuzz/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
run_one() {
  local target=$1
  mkdir -p "build-fuzz/fuzz-work/$target"
  local dict=()
  [ ! -f "tests/fuzz/$target.dict" ] || dict=(-dict="tests/fuzz/$target.dict")
  if "build-fuzz/tests/fuzz/fuzz_$target" "${dict[@]}" -max_total_time="$seconds" -timeout=10 \
       -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
       -artifact_prefix="build-fuzz/fuzz-artifacts/$target-" \
       "build-fuzz/fuzz-work/$target" "tests/fuzz/corpus/$target" \
       >"build-fuzz/fuzz-logs/$target.log" 2>&1; then
    echo "fuzz_$target: $(grep -Eo 'stat::number_of_executed_units: *[0-9]+' \
      "build-fuzz/fuzz-logs/$target.log" | grep -Eo '[0-9]+$') inputs in ${seconds} s, no failure"
  else
    echo "fuzz_$target FAILED:" >&2
    grep -E 'ERROR|SUMMARY|invariant|Test unit written' "build-fuzz/fuzz-logs/$target.log" >&2 || true
    return 1
  fi
}
fuzz_start=$SECONDS
failed=0
set -- $targets
while [ $# -gt 0 ]; do
  pids=()
  for _ in $(seq 1 "${FUZZ_PARALLEL:-2}"); do
    [ $# -gt 0 ] || break
    run_one "$1" & pids+=($!)
    shift
  done
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
done
echo ".ci/fuzz.sh: fuzzing took $((SECONDS - fuzz_start)) s, all of .ci/fuzz.sh $((SECONDS - start)) s"
exit $failed
