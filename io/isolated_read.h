// Runs a reader of an untrusted file in a child process, so that a crash or a hang inside a
// third-party parser becomes a clear error instead of taking the caller down.
//
// Why: libhdf5 (Debian's 1.10.8) is not hardened against malformed files. Fed damaged HDF5
// images, it overflows heap buffers, asks malloc for 68 GB or 2^63 bytes and leaks inside H5Fopen
// (found by tests/fuzz/fuzz_bilm_hdf5 within minutes; inputs in tests/data/damaged-hdf5/). We
// cannot fix the library, so every read of a user's HDF5 file runs here: the child does the
// whole read and conversion and streams the tensors back through a pipe; the parent turns the
// child's elmo::Error into the same Error, and its death (a signal, a sanitizer's exit, the time
// limit) into an Error that names the file and what to do.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace elmo {

// What a reader hands back: f32 CPU tensors and a few integers (shapes, flags).
struct IsolatedResult {
  NamedTensors tensors;
  std::vector<int64_t> numbers;
};

// Runs `read` in a forked child and returns what it returned. `origin` names the file in
// messages; `limit_seconds` bounds the child's run (SIGALRM); `hint` says what to do when the
// child dies (appended to the message). An elmo::Error thrown in the child is rethrown here with
// its message (another std::exception, such as bad_alloc, as "<origin>: cannot read this file:
// <what>"); a signal, a non-zero exit or an incomplete answer is an Error "<origin>: the reader
// process <what happened> ... <hint>". The child never returns into the caller's code: it ends
// with _exit.
IsolatedResult run_isolated(const std::string& origin, int limit_seconds,
                            const std::function<IsolatedResult()>& read, const std::string& hint);

}  // namespace elmo
