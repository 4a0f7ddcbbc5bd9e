// Checkpoints: crash-safe directories of safetensors files plus state.json.
//
// Layout (DESIGN.md §5):
//   <run_dir>/checkpoints/step-<N>/<name>.safetensors   one per CheckpointData::files entry
//                                   state.json           written last inside the folder
//   <run_dir>/checkpoints/latest                         "step-<N>\n", updated last of all
// Saving builds "step-<N>.tmp-<pid>" next to the final folder, fsyncs every file, renames the
// folder into place (atomically replacing an older folder of the same step), fsyncs the parent,
// then rewrites "latest" atomically and finally prunes old step folders. A crash at any moment
// leaves the previous checkpoint loadable; leftover "*.tmp-*" entries are ignored by readers and
// removed by the next save.
// state.json is the caller's JSON object plus three reserved keys written by save_checkpoint:
// "format": "elmo_fast-checkpoint-1", "step": N and "files": ["model", "optimizer", ...].
// Sharded checkpoints (distributed runs): when state.json has "shards":
//   {"files": ["shard-0", "shard-1", ...], "axis": {"model": 0, "optimizer": 0, "carry": 1},
//    "interleave": ["model", "optimizer"]}
// each shard file holds tensors named "<file>/<tensor>" (e.g. "model/embedding.weight", the rows
// one rank owns). load_checkpoint assembles them: for every such tensor, the part in <file> (if
// any) comes first, then the shards' parts in the listed order along the file's axis:
// concatenated, or, for the files listed in "interleave" (optional; axis 0 only), dealt
// round-robin (the first slice of every shard in the listed order, then the second slice of
// every shard, ...: shard s of S holds the tail's slices s, s + S, ...). Readers therefore always
// see whole tensors, whatever the world size that wrote them.
// Checksums: every tensor file carries per-tensor CRC32Cs (io/safetensors.h), verified on every
// load. A mismatch is never silently used nor silently skipped: load_checkpoint throws
// CheckpointChecksumError naming the file and tensor and the newest older checkpoint that
// verifies (callers add the flag that loads it). Checkpoints written before checksums load
// unverified with a one-line notice.
// What it is not: it does not know what the tensors mean (the trainer fills and reads them).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"

namespace elmo {

inline constexpr const char* kCheckpointFormat = "elmo_fast-checkpoint-1";

struct CheckpointData {
  int64_t step = 0;
  std::string dir;  // the step folder it was loaded from (set by load_checkpoint)
  // Caller state (tokens seen, stream positions, RNG states, config hash, world size...): a JSON
  // object (or null). The reserved keys "format", "step" and "files" are managed here and are
  // not returned by load_checkpoint.
  nlohmann::json state;
  // {"model", [...]}, {"optimizer", [...]}, {"carry", [...]}: each becomes <name>.safetensors.
  // Names: letters, digits, '_', '-', '.'; unique.
  std::vector<std::pair<std::string, NamedTensors>> files;
  // Safetensors files already written elsewhere ({name, path}; e.g. by the other ranks of a
  // distributed run), moved into the folder as <name>.safetensors before it is installed.
  std::vector<std::pair<std::string, std::string>> adopted;
  // Loaded by load_checkpoint(path, part) as rank part_rank's share; -1: whole tensors.
  int part_rank = -1;

  // The tensors of file `name`, or nullptr when the checkpoint has no such file.
  const NamedTensors* file(const std::string& name) const;
};

// Saves into <run_dir>/checkpoints/step-<step>/ and returns that path. keep_last > 0 keeps only
// the newest keep_last step folders (by step number; the one just written and the one "latest"
// names are never deleted); keep_last == 0 keeps all.
std::string save_checkpoint(const std::string& run_dir, const CheckpointData& data,
                            int keep_last);

// A tensor of a checkpoint fails its checksum. what() names the step folder, the file and the
// tensor, and the newest older checkpoint of the same checkpoints folder that loads and verifies
// (fallback(), "" when there is none).
class CheckpointChecksumError : public Error {
 public:
  CheckpointChecksumError(const std::string& message, std::string fallback)
      : Error(message), fallback_(std::move(fallback)) {}
  const std::string& fallback() const { return fallback_; }

 private:
  std::string fallback_;
};

// `path` may be a step folder, a checkpoints folder or a run folder. For the latter two,
// "latest" is followed; when it is missing or names a missing, incomplete or damaged folder, the
// newest step folder that loads is used instead, with a warning. Errors name the file and say
// whether the checkpoint is incomplete, damaged or not an elmo_fast checkpoint at all. A tensor
// that fails its checksum is CheckpointChecksumError (no fallback: the caller decides).
CheckpointData load_checkpoint(const std::string& path);

// What one rank of a distributed run needs of a checkpoint: with `part` set, a checkpoint
// written by the same number of ranks with the same hot head (state.json "shards": as many
// files as part.world, "hot_rows" == part.hot_rows) loads only its files that are not shards
// and shard `part.rank`, assembled from that one shard: a dealt tensor becomes the replicated
// rows followed by this shard's rows (the rank's home rows of a sharded layout,
// model/row_layout.h), a split one the rank's part; CheckpointData::part_rank says so. Any other
// checkpoint loads whole, as load_checkpoint(path) does. So a same-size resume never reads the
// other ranks' rows.
struct CheckpointPart {
  int rank = 0;
  int world = 1;
  int64_t hot_rows = 0;
};
CheckpointData load_checkpoint(const std::string& path, const CheckpointPart& part);

// Installs a copy of the step folder `step_dir` as <its checkpoints folder>/<name> (e.g.
// "best"), atomically replacing an earlier one: the copy is built under "<name>.tmp-<pid>"
// (files hard-linked where the file system allows, since checkpoint files are never modified
// in place; copied otherwise), its state.json gets the keys of `extra_state` (an object)
// merged in, and it is renamed into place (RENAME_EXCHANGE over an existing folder). `name` may
// not be a step-<N> name or "latest": keep_last never deletes such a folder and "latest" never
// names it. Returns the installed path. Error when step_dir is not a complete checkpoint.
std::string install_checkpoint_copy(const std::string& step_dir, const std::string& name,
                                    const nlohmann::json& extra_state);

// Merges the keys of `extra_state` (an object; reserved keys refused) into the state.json of
// the step folder `step_dir`, rewritten atomically (temporary file, fsync, rename).
void update_checkpoint_state(const std::string& step_dir, const nlohmann::json& extra_state);

// The step folder load_checkpoint(run_dir) would pick (run or checkpoints folder), judged by a
// complete state.json and the presence of its files; nullopt when there is none.
std::optional<std::string> find_latest_checkpoint(const std::string& run_dir);

}  // namespace elmo
