// The key-value interface the distributed pieces meet through, and the errors of comm/.
//
// Ranks publish what their peers need to connect (UCX worker addresses, the NCCL unique id,
// Gloo's pair addresses) under agreed keys and read their peers' entries. comm/rendezvous.h
// implements it over TCP (the scheduler's or rank 0's store); tests may use any other
// implementation. What it is not: a database (values are small, keys are never deleted).
#pragma once

#include <string>

#include "runtime/error.h"

namespace elmo {

// A failure of the distributed machinery (rendezvous, collectives, row exchange): timeouts,
// refused connections, transport errors. The message names the peer and what to check.
class CommError : public Error {
 public:
  explicit CommError(const std::string& what) : Error(what) {}
};

// A peer rank died, hung or closed its connections: every rank stops with this error.
class PeerLost : public CommError {
 public:
  PeerLost(int rank, const std::string& what) : CommError(what), rank_(rank) {}
  int rank() const { return rank_; }  // -1 when the lost peer is the rendezvous server

 private:
  int rank_;
};

class KvStore {
 public:
  virtual ~KvStore() = default;
  // Sets (or overwrites) `key`. Values are binary-safe.
  virtual void set(const std::string& key, const std::string& value) = 0;
  // Waits until `key` is set and returns its value; at most timeout_s seconds (< 0: the
  // store's default), then CommError naming the key.
  virtual std::string get(const std::string& key, double timeout_s = -1.0) = 0;
};

}  // namespace elmo
