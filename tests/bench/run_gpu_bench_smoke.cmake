# Smoke test of one GPU benchmark (registered in tests/CMakeLists.txt, label gpu):
#   cmake -DBENCH=<binary> -DJSON=<output file> -P run_gpu_bench_smoke.cmake
# Runs `<binary> --quick --json <JSON>`. Exit code 77 (no CUDA device) prints "SKIPPED: ..." with
# the benchmark's message (which names the CUDA error) and succeeds, which the test's
# SKIP_REGULAR_EXPRESSION turns into a skip - unless ELMO_REQUIRE_GPU is set (to anything but ""
# or "0"): then no GPU is a failure, whatever the benchmark's exit code. Any other non-zero exit
# code fails; so does a JSON file that is missing, does not parse, or has no "cases".
if(NOT BENCH OR NOT JSON)
  message(FATAL_ERROR "run_gpu_bench_smoke.cmake needs -DBENCH=<binary> -DJSON=<file>")
endif()
set(require_gpu OFF)
if(DEFINED ENV{ELMO_REQUIRE_GPU} AND NOT "$ENV{ELMO_REQUIRE_GPU}" STREQUAL ""
   AND NOT "$ENV{ELMO_REQUIRE_GPU}" STREQUAL "0")
  set(require_gpu ON)
endif()
file(REMOVE "${JSON}")
execute_process(COMMAND "${BENCH}" --quick --json "${JSON}" RESULT_VARIABLE rc
                OUTPUT_VARIABLE out ERROR_VARIABLE out)
message("${out}")
if(rc EQUAL 77 OR (require_gpu AND out MATCHES "no CUDA device visible"))
  string(REGEX MATCH "no CUDA device visible[^\n]*" why "${out}")
  if(require_gpu)
    message(FATAL_ERROR "ELMO_REQUIRE_GPU is set but ${BENCH} found no GPU: ${why}")
  endif()
  message("SKIPPED: no CUDA device visible; ${BENCH} measured nothing: ${why}")
  return()
endif()
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${BENCH} --quick exited with ${rc}")
endif()
if(NOT EXISTS "${JSON}")
  message(FATAL_ERROR "${BENCH} exited 0 but wrote no ${JSON}")
endif()
file(READ "${JSON}" content)
string(JSON cases ERROR_VARIABLE json_error GET "${content}" cases)
if(json_error)
  message(FATAL_ERROR "${JSON} is not valid JSON with a \"cases\" array: ${json_error}")
endif()
string(JSON count ERROR_VARIABLE json_error LENGTH "${content}" cases)
if(json_error OR count EQUAL 0)
  message(FATAL_ERROR "${JSON} has no cases (${json_error})")
endif()
string(JSON device ERROR_VARIABLE json_error GET "${content}" device name)
if(json_error)
  message(FATAL_ERROR "${JSON} has no device.name: ${json_error}")
endif()
message("ok: ${count} cases on ${device} in ${JSON}")
