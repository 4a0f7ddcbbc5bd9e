#include "io/checkpoint.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "runtime/error.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

CheckpointData make_data(int64_t step) {
  CheckpointData d;
  d.step = step;
  d.state = {{"tokens_seen", 1000 * step}, {"streams", {{"fwd", {1, 2, 3}}}}, {"seed", 7}};
  const float s = static_cast<float>(step);
  d.files = {{"model",
              {{"embedding.weight", Tensor::from_floats({s, 1, 2, 3, 4, 5}, {3, 2})},
               {"softmax.bias", Tensor::from_floats({-1, s, 0.5f}, {3})}}},
             {"optimizer", {{"embedding.weight.adagrad_acc", Tensor::from_floats({1, 1, 1, 1, 1, s}, {3, 2})}}},
             {"carry", {{"fwd.0.h", Tensor::zeros({2, 4})}}}};
  return d;
}

void expect_same(const CheckpointData& a, const CheckpointData& b) {
  EXPECT_EQ(a.step, b.step);
  EXPECT_EQ(a.state, b.state);
  ASSERT_EQ(a.files.size(), b.files.size());
  for (size_t f = 0; f < a.files.size(); ++f) {
    EXPECT_EQ(a.files[f].first, b.files[f].first);
    ASSERT_EQ(a.files[f].second.size(), b.files[f].second.size());
    for (size_t i = 0; i < a.files[f].second.size(); ++i) {
      EXPECT_EQ(a.files[f].second[i].first, b.files[f].second[i].first);
      EXPECT_EQ(a.files[f].second[i].second.to_floats(), b.files[f].second[i].second.to_floats());
    }
  }
}

std::string load_error(const std::string& path) {
  try {
    load_checkpoint(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(Checkpoint, SaveAndLoadFromStepCheckpointsAndRunFolders) {
  const std::string run = testing::temp_dir("ckpt_roundtrip");
  const CheckpointData data = make_data(5);
  const std::string path = save_checkpoint(run, data, 0);
  EXPECT_EQ(path, run + "/checkpoints/step-5");
  EXPECT_EQ(entries(path), (std::vector<std::string>{"carry.safetensors", "model.safetensors",
                                                      "optimizer.safetensors", "state.json"}));
  EXPECT_EQ(read_file(run + "/checkpoints/latest"), "step-5\n");
  const auto state = nlohmann::json::parse(read_file(path + "/state.json"));
  EXPECT_EQ(state["format"], kCheckpointFormat);
  EXPECT_EQ(state["step"], 5);
  EXPECT_EQ(state["tokens_seen"], 5000);
  for (const std::string& p : {path, run + "/checkpoints", run}) {
    SCOPED_TRACE(p);
    const CheckpointData back = load_checkpoint(p);
    expect_same(back, data);
    ASSERT_NE(back.file("carry"), nullptr);
    EXPECT_EQ(back.file("nope"), nullptr);
  }
  EXPECT_EQ(find_latest_checkpoint(run), path);
  EXPECT_EQ(find_latest_checkpoint(run + "/checkpoints"), path);
}

TEST(Checkpoint, KeepLastPrunesOldStepsButNeverLatestOrTheNewOne) {
  const std::string run = testing::temp_dir("ckpt_prune");
  for (int step = 1; step <= 5; ++step) save_checkpoint(run, make_data(step), 2);
  EXPECT_EQ(entries(run + "/checkpoints"),
            (std::vector<std::string>{"latest", "step-4", "step-5"}));
  // A run resumed from an older point: step 3 is written while step-4/5 exist.
  save_checkpoint(run, make_data(3), 1);
  EXPECT_EQ(entries(run + "/checkpoints"),
            (std::vector<std::string>{"latest", "step-3", "step-5"}));
  EXPECT_EQ(load_checkpoint(run).step, 3);  // "latest" wins over the higher step number
  // keep_last 0 keeps everything.
  const std::string all = testing::temp_dir("ckpt_keep_all");
  for (int step = 1; step <= 3; ++step) save_checkpoint(all, make_data(step), 0);
  EXPECT_EQ(entries(all + "/checkpoints"),
            (std::vector<std::string>{"latest", "step-1", "step-2", "step-3"}));
}

TEST(Checkpoint, SavingTheSameStepTwiceReplacesIt) {
  const std::string run = testing::temp_dir("ckpt_twice");
  save_checkpoint(run, make_data(2), 0);
  CheckpointData second = make_data(2);
  second.state["tokens_seen"] = 42;
  second.files.pop_back();
  save_checkpoint(run, second, 0);
  expect_same(load_checkpoint(run), second);
  EXPECT_EQ(entries(run + "/checkpoints"), (std::vector<std::string>{"latest", "step-2"}));
  EXPECT_FALSE(fs::exists(run + "/checkpoints/step-2/carry.safetensors"));
}

TEST(Checkpoint, CrashLeftoversAreIgnoredAndCleanedUp) {
  const std::string run = testing::temp_dir("ckpt_crash");
  save_checkpoint(run, make_data(5), 0);
  // Crash while building step 6: a partial temporary folder and a temporary "latest".
  const fs::path ckpt = fs::path(run) / "checkpoints";
  fs::create_directory(ckpt / "step-6.tmp-99999");
  write_file_atomic((ckpt / "step-6.tmp-99999" / "model.safetensors").string(), "garbage");
  write_file_atomic((ckpt / "latest.tmp-99999").string(), "step-");
  EXPECT_EQ(load_checkpoint(run).step, 5);
  EXPECT_EQ(find_latest_checkpoint(run), (ckpt / "step-5").string());
  save_checkpoint(run, make_data(7), 0);
  EXPECT_EQ(entries(ckpt), (std::vector<std::string>{"latest", "step-5", "step-7"}));
}

TEST(Checkpoint, FallsBackWhenLatestIsMissingOrPointsToAnIncompleteFolder) {
  const std::string run = testing::temp_dir("ckpt_fallback");
  save_checkpoint(run, make_data(5), 0);
  const fs::path ckpt = fs::path(run) / "checkpoints";
  // An incomplete newer folder (no state.json) that "latest" names.
  fs::create_directory(ckpt / "step-6");
  write_file_atomic((ckpt / "step-6" / "model.safetensors").string(), "partial");
  write_file_atomic((ckpt / "latest").string(), "step-6\n");
  EXPECT_EQ(load_checkpoint(run).step, 5);
  EXPECT_EQ(find_latest_checkpoint(run), (ckpt / "step-5").string());
  // "latest" names a folder that does not exist.
  write_file_atomic((ckpt / "latest").string(), "step-9\n");
  EXPECT_EQ(load_checkpoint(run).step, 5);
  // No "latest" at all.
  fs::remove(ckpt / "latest");
  EXPECT_EQ(load_checkpoint(run).step, 5);
  EXPECT_EQ(find_latest_checkpoint(run), (ckpt / "step-5").string());
  // A damaged newest checkpoint (truncated tensor file) is skipped too.
  save_checkpoint(run, make_data(8), 0);
  fs::resize_file(ckpt / "step-8" / "model.safetensors", 20);
  EXPECT_EQ(load_checkpoint(run).step, 5);
}

TEST(Checkpoint, IncompleteOrDamagedStepFoldersNameTheFile) {
  const std::string run = testing::temp_dir("ckpt_damaged");
  const std::string path = save_checkpoint(run, make_data(3), 0);
  const std::string model = path + "/model.safetensors";
  const std::string saved = read_file(model);

  fs::resize_file(model, saved.size() - 4);
  EXPECT_THAT(load_error(path), HasSubstr("checkpoint " + path + " is damaged: " + model +
                                          ": truncated safetensors file"));
  fs::remove(model);
  EXPECT_THAT(load_error(path), HasSubstr(model + " is missing: checkpoint " + path +
                                          " is incomplete or damaged"));
  write_file_atomic(model, saved);
  EXPECT_NO_THROW(load_checkpoint(path));

  fs::remove(path + "/state.json");
  EXPECT_THAT(load_error(path), HasSubstr(path + "/state.json is missing: checkpoint " + path +
                                          " is incomplete"));
  EXPECT_FALSE(find_latest_checkpoint(run).has_value());
  EXPECT_THAT(load_error(run), HasSubstr("is incomplete"));

  write_file_atomic(path + "/state.json", "{\"step\": 3,");
  EXPECT_THAT(load_error(path), HasSubstr("is damaged: state.json is not valid JSON"));
}

TEST(Checkpoint, ForeignFoldersAreRecognised) {
  const std::string dir = testing::temp_dir("ckpt_foreign");
  write_file_atomic(dir + "/state.json", R"({"step": 3, "files": []})");
  EXPECT_THAT(load_error(dir), HasSubstr("not an elmo_fast checkpoint"));
  write_file_atomic(dir + "/state.json",
                    R"({"format": "elmo_fast-checkpoint-9", "step": 3, "files": []})");
  EXPECT_THAT(load_error(dir), HasSubstr("unsupported checkpoint format 'elmo_fast-checkpoint-9'"));
  const std::string hf = testing::temp_dir("ckpt_hf");
  write_file_atomic(hf + "/model.safetensors", "x");
  EXPECT_THAT(load_error(hf), HasSubstr("not an elmo_fast checkpoint (no state.json)"));
  EXPECT_THAT(load_error(testing::temp_dir("ckpt_empty")), HasSubstr("no checkpoint found"));
  EXPECT_THAT(load_error(dir + "/nowhere"), HasSubstr("no such checkpoint folder"));
  EXPECT_FALSE(find_latest_checkpoint(dir + "/nowhere").has_value());
}

// A distributed save: rank 0 writes the replicated part (hot rows, dense tensors), every rank its
// shard file beforehand (adopted into the folder); loading assembles whole tensors, rows along
// axis 0 and carried-state rows along axis 1.
TEST(Checkpoint, ShardedCheckpointsLoadAsWholeTensors) {
  const std::string dir = testing::temp_dir("ckpt_shards");
  CheckpointData d;
  d.step = 4;
  d.state = {{"world_size", 2},
             {"shards",
              {{"files", {"shard-0", "shard-1"}}, {"axis", {{"model", 0}, {"carry", 1}}}}}};
  d.files = {{"model",
              {{"lstm.w", Tensor::from_floats({9, 9}, {2})},
               {"embedding.weight", Tensor::from_floats({0, 1}, {1, 2})}}}};  // hot row 0
  for (int r = 0; r < 2; ++r) {
    const float base = r == 0 ? 2.0f : 6.0f;  // rank 0 owns rows 1-2, rank 1 rows 3-4
    const std::string path = str(dir, "/shard-", r, ".pending");
    save_safetensors(path, {{"model/embedding.weight",
                             Tensor::from_floats({base, base + 1, base + 2, base + 3}, {2, 2})},
                            {"carry/fwd.h", Tensor::from_floats({10.0f * r, 10.0f * r + 1}, {2, 1, 1})}});
    d.adopted.emplace_back(str("shard-", r), path);
  }
  const std::string folder = save_checkpoint(dir, d, 0);
  EXPECT_FALSE(fs::exists(dir + "/shard-0.pending"));
  EXPECT_TRUE(fs::exists(folder + "/shard-1.safetensors"));

  const CheckpointData loaded = load_checkpoint(dir);
  const NamedTensors* model = loaded.file("model");
  const NamedTensors* carry = loaded.file("carry");
  ASSERT_NE(model, nullptr);
  ASSERT_NE(carry, nullptr);
  EXPECT_EQ(loaded.file("shard-0"), nullptr);
  ASSERT_EQ(model->size(), 2u);
  EXPECT_EQ((*model)[0].second.to_floats(), (std::vector<float>{9, 9}));
  EXPECT_EQ((*model)[1].second.shape(), Shape({5, 2}));
  EXPECT_EQ((*model)[1].second.to_floats(), (std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  ASSERT_EQ(carry->size(), 1u);
  EXPECT_EQ((*carry)[0].first, "fwd.h");
  EXPECT_EQ((*carry)[0].second.shape(), Shape({2, 2, 1}));
  EXPECT_EQ((*carry)[0].second.to_floats(), (std::vector<float>{0, 10, 1, 11}));
}

// The tail rows dealt round-robin over 3 ranks (rank r owns tail rows r, r + 3, ...): loading
// deals the shards' rows back into place after the replicated head.
TEST(Checkpoint, InterleavedShardsAreDealtBackIntoPlace) {
  const std::string dir = testing::temp_dir("ckpt_interleave");
  CheckpointData d;
  d.step = 2;
  d.state = {{"shards",
              {{"files", {"shard-0", "shard-1", "shard-2"}},
               {"axis", {{"model", 0}, {"carry", 1}}},
               {"interleave", {"model"}}}}};
  d.files = {{"model", {{"embedding.weight", Tensor::from_floats({0, 0}, {1, 2})}}}};  // hot row 0
  // Tail rows 1..7 hold (id, id): rank 0 owns 1, 4, 7; rank 1 owns 2, 5; rank 2 owns 3, 6.
  const std::vector<std::vector<float>> owned = {{1, 4, 7}, {2, 5}, {3, 6}};
  for (int r = 0; r < 3; ++r) {
    std::vector<float> rows;
    for (const float id : owned[r]) rows.insert(rows.end(), {id, id});
    const std::string path = str(dir, "/shard-", r, ".pending");
    save_safetensors(path, {{"model/embedding.weight",
                             Tensor::from_floats(rows, {static_cast<int64_t>(owned[r].size()), 2})}});
    d.adopted.emplace_back(str("shard-", r), path);
  }
  save_checkpoint(dir, d, 0);
  const CheckpointData loaded = load_checkpoint(dir);
  const NamedTensors* model = loaded.file("model");
  ASSERT_NE(model, nullptr);
  ASSERT_EQ(model->size(), 1u);
  EXPECT_EQ((*model)[0].second.shape(), Shape({8, 2}));
  EXPECT_EQ((*model)[0].second.to_floats(),
            (std::vector<float>{0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7}));
}

// Dealt shards whose row counts cannot come from dealing (rank 1 with more rows than rank 0) are
// damage, named with the tensor; so is an "interleave" entry without axis 0.
TEST(Checkpoint, InterleavedShardsWithImpossibleCountsAreDamage) {
  const std::string dir = testing::temp_dir("ckpt_interleave_bad");
  CheckpointData d;
  d.step = 1;
  d.state = {{"shards",
              {{"files", {"shard-0", "shard-1"}}, {"axis", {{"model", 0}}}, {"interleave", {"model"}}}}};
  d.files = {{"shard-0", {{"model/t", Tensor::from_floats({1, 2}, {1, 2})}}},
             {"shard-1", {{"model/t", Tensor::from_floats({1, 2, 3, 4}, {2, 2})}}}};
  save_checkpoint(dir, d, 0);
  EXPECT_THAT(testing::error_of([&] { load_checkpoint(dir); }),
              ::testing::AllOf(HasSubstr("model/t"), HasSubstr("shard 0 holds 1 rows")));

  const std::string dir2 = testing::temp_dir("ckpt_interleave_axis");
  d.state = {{"shards",
              {{"files", {"shard-0", "shard-1"}}, {"axis", {{"model", 1}}}, {"interleave", {"model"}}}}};
  save_checkpoint(dir2, d, 0);
  EXPECT_THAT(testing::error_of([&] { load_checkpoint(dir2); }),
              HasSubstr("is not a file with axis 0"));
}

TEST(Checkpoint, ShardTensorsWithMismatchedShapesAreDamage) {
  const std::string dir = testing::temp_dir("ckpt_bad_shards");
  CheckpointData d;
  d.step = 1;
  d.state = {{"shards", {{"files", {"shard-0"}}, {"axis", {{"model", 0}}}}}};
  d.files = {{"model", {{"t", Tensor::from_floats({1, 2}, {1, 2})}}},
             {"shard-0", {{"model/t", Tensor::from_floats({1, 2, 3}, {1, 3})}}}};
  save_checkpoint(dir, d, 0);
  EXPECT_THAT(testing::error_of([&] { load_checkpoint(dir); }),
              ::testing::AllOf(HasSubstr("model/t"), HasSubstr("differ in shape")));
}

TEST(Checkpoint, RejectsReservedStateKeysAndBadFileNames) {
  const std::string run = testing::temp_dir("ckpt_reserved");
  CheckpointData d = make_data(1);
  d.state["format"] = "mine";
  EXPECT_THROW(save_checkpoint(run, d, 0), Error);
  d = make_data(1);
  d.files.push_back({"../evil", {}});
  EXPECT_THROW(save_checkpoint(run, d, 0), Error);
  d = make_data(1);
  d.files.push_back({"model", {}});
  EXPECT_THROW(save_checkpoint(run, d, 0), Error);
  EXPECT_FALSE(find_latest_checkpoint(run).has_value());
}

// A named copy of a step folder (checkpoints/best): its files, its state plus the extra keys,
// loadable like the step, installed over an earlier copy, never pruned by keep_last, never
// named by "latest"; names that would clash are refused, and an incomplete source too.
TEST(Checkpoint, InstalledCopiesSurvivePruningAndReplaceAtomically) {
  const std::string run = testing::temp_dir("ckpt_copy");
  const std::string step2 = save_checkpoint(run, make_data(2), 1);
  const std::string best =
      install_checkpoint_copy(step2, "best", {{"best", {{"step", 2}, {"valid_ppl", 81.5}}}});
  EXPECT_EQ(best, run + "/checkpoints/best");
  CheckpointData copy = load_checkpoint(best);
  EXPECT_EQ(copy.state["best"]["valid_ppl"], 81.5);
  copy.state.erase("best");
  expect_same(copy, make_data(2));
  // keep_last = 1 prunes step-2 but not the copy (hard links keep the files).
  save_checkpoint(run, make_data(3), 1);
  save_checkpoint(run, make_data(4), 1);
  EXPECT_EQ(entries(run + "/checkpoints"), (std::vector<std::string>{"best", "latest", "step-4"}));
  EXPECT_EQ(load_checkpoint(best).step, 2);
  EXPECT_EQ(load_checkpoint(run).step, 4);  // a run folder still means its latest step
  // A newer best replaces it; no temporary folder is left behind.
  install_checkpoint_copy(run + "/checkpoints/step-4", "best", {{"best", {{"step", 4}}}});
  EXPECT_EQ(load_checkpoint(best).step, 4);
  EXPECT_EQ(entries(run + "/checkpoints"), (std::vector<std::string>{"best", "latest", "step-4"}));
  // A leftover of an interrupted copy is cleaned by the next one.
  fs::create_directory(run + "/checkpoints/best.tmp-99999");
  install_checkpoint_copy(run + "/checkpoints/step-4", "best", nlohmann::json::object());
  EXPECT_FALSE(fs::exists(run + "/checkpoints/best.tmp-99999"));
  EXPECT_THAT(testing::error_of(
                  [&] { install_checkpoint_copy(run + "/checkpoints/step-4", "step-9", {}); }),
              HasSubstr("cannot install a checkpoint copy named 'step-9'"));
  EXPECT_THAT(testing::error_of(
                  [&] { install_checkpoint_copy(run + "/checkpoints/step-4", "latest", {}); }),
              HasSubstr("named 'latest'"));
  fs::remove(run + "/checkpoints/step-4/optimizer.safetensors");
  EXPECT_THAT(
      testing::error_of([&] { install_checkpoint_copy(run + "/checkpoints/step-4", "other", {}); }),
      HasSubstr("optimizer.safetensors is missing"));
  EXPECT_FALSE(fs::exists(run + "/checkpoints/other"));
}

TEST(Checkpoint, StateUpdatesMergeKeysAndKeepTheReservedOnes) {
  const std::string run = testing::temp_dir("ckpt_state_update");
  const std::string step = save_checkpoint(run, make_data(7), 0);
  update_checkpoint_state(step, {{"validation", {{"best_step", 7}}}, {"seed", 8}});
  const CheckpointData loaded = load_checkpoint(step);
  EXPECT_EQ(loaded.step, 7);
  EXPECT_EQ(loaded.state["validation"]["best_step"], 7);
  EXPECT_EQ(loaded.state["seed"], 8);
  EXPECT_EQ(loaded.state["tokens_seen"], 7000);
  EXPECT_THAT(testing::error_of([&] {
                update_checkpoint_state(step, {{"step", 3}});
              }),
              HasSubstr("reserved key 'step'"));
  EXPECT_EQ(load_checkpoint(step).step, 7);
  // The merged state.json carries its own recomputed checksum: it loaded above, and the
  // checksum key is not part of the state the caller sees.
  EXPECT_FALSE(loaded.state.contains("crc32c"));
  EXPECT_NE(read_file(step + "/state.json").find("\"crc32c\""), std::string::npos);
}

// Checksums: a tensor whose bytes changed is refused naming the file and the tensor, never
// skipped silently; the error names the newest older checkpoint that verifies.
TEST(Checkpoint, DamagedTensorsAreRefusedNamingTheNewestOlderCheckpointThatVerifies) {
  const std::string run = testing::temp_dir("ckpt_crc");
  save_checkpoint(run, make_data(4), 0);
  save_checkpoint(run, make_data(5), 0);
  const std::string path = save_checkpoint(run, make_data(8), 0);
  // step-5 is damaged too: the fallback is step-4.
  for (const std::string& dir : {path, run + "/checkpoints/step-5"}) {
    const std::string model = dir + "/model.safetensors";
    std::string bytes = read_file(model);
    for (int i = 0; i < 4; ++i) bytes[bytes.size() - 10 + i] ^= 0xff;  // inside softmax.bias
    write_file_atomic(model, bytes);
  }
  for (const std::string& p : {run, run + "/checkpoints", path, path + "/"}) {
    SCOPED_TRACE(p);
    try {
      load_checkpoint(p);
      ADD_FAILURE() << "a damaged checkpoint loaded";
    } catch (const CheckpointChecksumError& e) {
      EXPECT_THAT(e.what(), HasSubstr(" is damaged: " + path +
                                      "/model.safetensors: tensor 'softmax.bias' fails its "
                                      "checksum"));
      EXPECT_EQ(e.fallback(), run + "/checkpoints/step-4");
      EXPECT_THAT(e.what(), HasSubstr("the newest older checkpoint that verifies is " + run +
                                      "/checkpoints/step-4"));
    }
  }
  EXPECT_EQ(load_checkpoint(run + "/checkpoints/step-4").step, 4);
  fs::remove_all(run + "/checkpoints/step-4");
  try {
    load_checkpoint(run);
    ADD_FAILURE() << "a damaged checkpoint loaded";
  } catch (const CheckpointChecksumError& e) {
    EXPECT_EQ(e.fallback(), "");
    EXPECT_THAT(e.what(), HasSubstr("no older checkpoint in " + run + "/checkpoints verifies"));
  }
}

// tests/data/legacy-checkpoint: written by elmo_fast before checksums existed.
TEST(Checkpoint, CheckpointsWithoutChecksumsLoadWithANotice) {
  const std::string legacy = testing::source_dir() + "/tests/data/legacy-checkpoint";
  ::testing::internal::CaptureStderr();
  const CheckpointData data = load_checkpoint(legacy);
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(data.step, 2);
  EXPECT_EQ(data.dir, legacy + "/checkpoints/step-2");
  ASSERT_NE(data.file("model"), nullptr);
  EXPECT_THAT(log, HasSubstr("carries no tensor checksums (written before elmo_fast had them): "
                             "loaded without verification"));
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << log;
  // Saved again, it carries them.
  const std::string run = testing::temp_dir("ckpt_legacy_resave");
  CheckpointData again = data;
  save_checkpoint(run, again, 0);
  ::testing::internal::CaptureStderr();
  load_checkpoint(run);
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
}

// state.json carries the CRC32C of the rest of its content: a changed number is refused like a
// damaged tensor (an edit that keeps the JSON valid would otherwise move the data position or the
// step silently).
TEST(Checkpoint, AChangedStateJsonIsRefusedLikeADamagedTensor) {
  const std::string run = testing::temp_dir("ckpt_state_crc");
  save_checkpoint(run, make_data(4), 0);
  const std::string path = save_checkpoint(run, make_data(5), 0);
  std::string text = read_file(path + "/state.json");
  EXPECT_NE(text.find("\"crc32c\": \""), std::string::npos) << text;
  const size_t at = text.find("5000");
  ASSERT_NE(at, std::string::npos) << text;
  text[at] = '6';  // tokens_seen 5000 -> 6000, still valid JSON
  write_file_atomic(path + "/state.json", text);
  try {
    load_checkpoint(run);
    ADD_FAILURE() << "a changed state.json loaded";
  } catch (const CheckpointChecksumError& e) {
    EXPECT_THAT(e.what(), HasSubstr(path + "/state.json fails its checksum"));
    EXPECT_EQ(e.fallback(), run + "/checkpoints/step-4");
  }
  EXPECT_EQ(find_latest_checkpoint(run), run + "/checkpoints/step-4") << "never picked";
}

// Values state.json's "shards" steers are checked before they are used (found by fuzzing:
// a non-integer axis escaped as a JSON library exception).
TEST(Checkpoint, ShardAxesMustBeDimensions) {
  const std::string run = testing::temp_dir("ckpt_axis");
  CheckpointData d = make_data(2);
  for (const nlohmann::json& axis :
       {nlohmann::json("x"), nlohmann::json(-1), nlohmann::json(9), nlohmann::json(1.5)}) {
    d.state["shards"] = {{"files", nlohmann::json::array()}, {"axis", {{"model", axis}}}};
    const std::string path = save_checkpoint(run, d, 0);
    EXPECT_THAT(load_error(path),
                HasSubstr("\"shards\".\"axis\" of 'model' is " + axis.dump() + ", not a dimension"))
        << axis;
  }
}

}  // namespace
}  // namespace elmo
