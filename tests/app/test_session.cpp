// session: data files of a config (builtin synthetic generated under run.dir/data, plain specs
// passed through), vocabulary preparation (built, saved, reused, overridden by data.vocab),
// Config -> BilmShape/BilmTrainOptions, run_dir_of, model tensors in and out (with the errors
// naming the parameter), load_model / load_model_vocab.
#include "app/session.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <utility>

#include "io/atomic_file.h"
#include "runtime/error.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

namespace fs = std::filesystem;

Config small_config(const std::string& run_dir) {
  Config c;
  c.run.dir = run_dir;
  c.synthetic.vocab_size = 40;
  c.synthetic.classes = 3;
  c.synthetic.train_sentences = 50;
  c.synthetic.valid_sentences = 10;
  c.model.embedding_dim = 4;
  c.model.cell_size = 6;
  c.model.projection_dim = 4;
  c.softmax.samples = 5;
  return c;
}

bool under(const std::string& path, const std::string& dir) {
  const std::string p = fs::weakly_canonical(path).string();
  const std::string d = fs::weakly_canonical(dir).string();
  return p.rfind(d + "/", 0) == 0;
}

TEST(Session, BuiltinSyntheticCorpusIsWrittenUnderRunData) {
  const std::string dir = testing::temp_dir("session_synth");
  const Config c = small_config(dir + "/run");
  ASSERT_EQ(c.data.corpus, kBuiltinSynthetic);
  const DataFiles files = resolve_data_files(c);
  EXPECT_TRUE(fs::is_regular_file(files.train)) << files.train;
  EXPECT_TRUE(fs::is_regular_file(files.valid)) << files.valid;
  EXPECT_NE(files.train, files.valid);
  EXPECT_TRUE(under(files.train, dir + "/run/data")) << files.train;
  EXPECT_TRUE(under(files.valid, dir + "/run/data")) << files.valid;
  EXPECT_TRUE(files.test.empty());
  ASSERT_TRUE(files.synthetic.has_value());
  EXPECT_EQ(files.synthetic->vocab_size(), 40);
  // 50 training sentences, one per line.
  const std::string text = read_file(files.train);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 50);
  // An explicit valid file wins over the generated one; test passes through.
  Config d = c;
  d.data.valid = "/some/valid.txt";
  d.data.test = "/some/test.txt";
  const DataFiles other = resolve_data_files(d);
  EXPECT_EQ(other.train, files.train);  // same spec: same files, reused
  EXPECT_EQ(other.valid, "/some/valid.txt");
  EXPECT_EQ(other.test, "/some/test.txt");
}

TEST(Session, PlainCorpusSpecPassesThrough) {
  Config c = small_config(testing::temp_dir("session_plain") + "/run");
  c.data.corpus = "/data/train/*.txt";
  c.data.valid = "/data/valid.txt";
  const DataFiles files = resolve_data_files(c);
  EXPECT_EQ(files.train, "/data/train/*.txt");
  EXPECT_EQ(files.valid, "/data/valid.txt");
  EXPECT_TRUE(files.test.empty());
  EXPECT_FALSE(files.synthetic.has_value());
  EXPECT_FALSE(fs::exists(c.run.dir + "/data"));  // nothing generated
}

TEST(Session, PrepareVocabBuildsSavesReusesAndHonoursDataVocab) {
  const std::string dir = testing::temp_dir("session_vocab");
  const std::string corpus = dir + "/train.txt";
  write_file_atomic(corpus, "b a b\nc b a\n");
  Config c = small_config(dir + "/run");
  c.data.corpus = corpus;
  DataFiles files = resolve_data_files(c);
  const Vocab built = prepare_vocab(c, files, false);
  ASSERT_EQ(built.size(), 6);
  EXPECT_EQ(built.token(3), "b");  // 3 times
  EXPECT_EQ(built.token(4), "a");  // 2 times
  EXPECT_EQ(built.token(5), "c");
  ASSERT_TRUE(fs::exists(c.run.dir + "/vocab.txt"));
  EXPECT_EQ(Vocab::load(c.run.dir + "/vocab.txt").hash(), built.hash());

  // The saved vocabulary is reused even when the corpus changes, unless rebuilding.
  write_file_atomic(corpus, "z z z y\n");
  EXPECT_EQ(prepare_vocab(c, files, false).hash(), built.hash());
  const Vocab rebuilt = prepare_vocab(c, files, true);
  EXPECT_EQ(rebuilt.size(), 5);
  EXPECT_EQ(rebuilt.token(3), "z");
  EXPECT_EQ(Vocab::load(c.run.dir + "/vocab.txt").hash(), rebuilt.hash());

  // data.vocab is used as given and copied to run.dir/vocab.txt.
  const std::string given = dir + "/given.txt";
  write_file_atomic(given, "</S>\n<S>\n<UNK>\nq\nr\ns\nt\n");
  c.data.vocab = given;
  const Vocab used = prepare_vocab(c, files, false);
  EXPECT_EQ(used.size(), 7);
  EXPECT_EQ(used.token(6), "t");
  EXPECT_EQ(read_file(c.run.dir + "/vocab.txt"), read_file(given));
}

TEST(Session, CacheDirDefaultsToRunCache) {
  Config c = small_config("/tmp/r");
  EXPECT_EQ(cache_dir(c), "/tmp/r/cache");
  c.data.cache_dir = "/elsewhere";
  EXPECT_EQ(cache_dir(c), "/elsewhere");
}

TEST(Session, BilmShapeAndOptionsFromConfig) {
  Config c;
  c.model.embedding_dim = 0;  // = output dim
  c.model.cell_size = 40;
  c.model.projection_dim = 12;
  c.model.layers = 3;
  c.model.cell_clip = 2.5;
  c.model.proj_clip = 0.0;
  c.model.skip_connections = false;
  c.model.bidirectional = false;
  c.model.dropout = 0.25;
  c.softmax.type = "full";
  c.softmax.samples = 77;
  c.run.seed = 4242;
  const BilmShape s = bilm_shape(c, 321);
  EXPECT_EQ(s.vocab, 321);
  EXPECT_EQ(s.embedding_dim, 12);
  EXPECT_EQ(s.cell_size, 40);
  EXPECT_EQ(s.proj_dim, 12);
  EXPECT_EQ(s.layers, 3);
  EXPECT_FLOAT_EQ(s.cell_clip, 2.5f);
  EXPECT_FLOAT_EQ(s.proj_clip, 0.0f);
  EXPECT_FALSE(s.skip_connections);
  EXPECT_FALSE(s.bidirectional);
  const BilmTrainOptions o = bilm_options(c);
  EXPECT_EQ(o.softmax, SoftmaxKind::kFull);
  EXPECT_EQ(o.samples, 77);
  EXPECT_FLOAT_EQ(o.dropout, 0.25f);
  EXPECT_EQ(o.seed, 4242u);
  EXPECT_EQ(o.precision, GemmPrecision::kFp32);  // the default
  for (const auto& [name, mode] : {std::pair{"tf32", GemmPrecision::kTf32},
                                   std::pair{"bf16", GemmPrecision::kBf16},
                                   std::pair{"fp32", GemmPrecision::kFp32}}) {
    Config p = c;
    p.train.precision = name;
    EXPECT_EQ(bilm_options(p).precision, mode) << name;
  }
  EXPECT_EQ(o.lstm_kernel, LstmKernel::kAuto);  // the default: the standard path for now
  for (const auto& [name, kernel] : {std::pair{"standard", LstmKernel::kStandard},
                                     std::pair{"persistent", LstmKernel::kPersistent}}) {
    Config p = c;
    p.train.lstm_kernel = name;
    EXPECT_EQ(bilm_options(p).lstm_kernel, kernel) << name;
  }

  c.model.projection_dim = 0;
  c.model.embedding_dim = 0;
  c.model.skip_connections = true;
  c.model.bidirectional = true;
  c.softmax.type = "sampled";
  const BilmShape plain = bilm_shape(c, 50);
  EXPECT_EQ(plain.embedding_dim, 40);  // = cell size without projection
  EXPECT_EQ(plain.proj_dim, 0);
  EXPECT_TRUE(plain.skip_connections);
  EXPECT_TRUE(plain.bidirectional);
  EXPECT_EQ(bilm_options(c).softmax, SoftmaxKind::kSampled);
  c.model.embedding_dim = 9;
  EXPECT_EQ(bilm_shape(c, 50).embedding_dim, 9);
}

TEST(Session, RunDirOf) {
  const std::string run = testing::temp_dir("session_rundir") + "/run";
  fs::create_directories(run + "/checkpoints/step-5");
  EXPECT_EQ(run_dir_of(run), run);
  EXPECT_EQ(run_dir_of(run + "/"), run);
  EXPECT_EQ(run_dir_of(run + "/checkpoints"), run);
  EXPECT_EQ(run_dir_of(run + "/checkpoints/"), run);
  EXPECT_EQ(run_dir_of(run + "/checkpoints/step-5"), run);
  EXPECT_EQ(run_dir_of(run + "/checkpoints/step-5/"), run);
  EXPECT_EQ(run_dir_of(run + "/./checkpoints/../checkpoints/step-5"), run);
}

std::unique_ptr<BiLM> small_model(const Config& c, int64_t vocab) {
  auto model = std::make_unique<BiLM>(bilm_shape(c, vocab), bilm_options(c));
  model->init(3, 0.1f, 1.0f);
  return model;
}

TEST(Session, ModelTensorsRoundTripAndErrorsNameTheParameter) {
  const Config c = small_config("/tmp/unused");
  auto a = small_model(c, 20);
  NamedTensors tensors = model_tensors(*a);
  ASSERT_EQ(tensors.size(), a->params().size());
  EXPECT_EQ(tensors.front().first, "embedding.weight");
  EXPECT_EQ(tensors.back().first, "softmax.bias");

  BiLM b(bilm_shape(c, 20), bilm_options(c));
  load_model_tensors(b, tensors, "origin.safetensors");
  for (const Parameter* p : a->params().all())
    EXPECT_EQ(p->value.to_floats(), b.params().get(p->name).value.to_floats()) << p->name;

  // Missing parameter.
  NamedTensors missing = tensors;
  missing.erase(missing.begin() + 3);
  const std::string dropped = tensors[3].first;
  try {
    load_model_tensors(b, missing, "origin.safetensors");
    FAIL() << "no error for a missing parameter";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("'" + dropped + "'"), std::string::npos) << what;
    EXPECT_NE(what.find("missing"), std::string::npos) << what;
    EXPECT_NE(what.find("origin.safetensors"), std::string::npos) << what;
  }
  // Wrong shape.
  NamedTensors wrong = tensors;
  for (auto& [name, t] : wrong)
    if (name == "softmax.weight") t = Tensor::zeros({21, 4});
  try {
    load_model_tensors(b, wrong, "origin.safetensors");
    FAIL() << "no error for a wrong shape";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("'softmax.weight'"), std::string::npos) << what;
    EXPECT_NE(what.find("[21, 4]"), std::string::npos) << what;
    EXPECT_NE(what.find("[20, 4]"), std::string::npos) << what;
  }
  // Wrong dtype with the right shape.
  NamedTensors ints = tensors;
  for (auto& [name, t] : ints)
    if (name == "softmax.bias") t = Tensor::zeros({20}, DType::kI32);
  EXPECT_THROW(load_model_tensors(b, ints, "x"), Error);
}

TEST(Session, LoadModelAndItsVocabulary) {
  const std::string dir = testing::temp_dir("session_load");
  Config c = small_config(dir + "/run");
  auto model = small_model(c, 20);
  std::vector<std::string> tokens = {"</S>", "<S>", "<UNK>"};
  for (int i = 3; i < 20; ++i) tokens.push_back(str("t", i));
  const Vocab vocab = Vocab::from_tokens(tokens);
  fs::create_directories(c.run.dir);
  vocab.save(c.run.dir + "/vocab.txt");
  CheckpointData ckpt;
  ckpt.step = 9;
  ckpt.state["config"] = config_to_toml(c);
  ckpt.state["vocab_size"] = 20;
  ckpt.files.emplace_back("model", model_tensors(*model));
  const std::string step_dir = save_checkpoint(c.run.dir, ckpt, 0);

  for (const std::string& path : {c.run.dir, step_dir, c.run.dir + "/checkpoints"}) {
    LoadedModel loaded = load_model(path);
    EXPECT_EQ(loaded.run_dir, c.run.dir) << path;
    EXPECT_EQ(loaded.checkpoint.step, 9);
    EXPECT_EQ(loaded.config, c);
    EXPECT_EQ(loaded.model->shape().vocab, 20);
    EXPECT_EQ(loaded.model->params().get("lstm.bwd.1.weight_hr").value.to_floats(),
              model->params().get("lstm.bwd.1.weight_hr").value.to_floats());
    EXPECT_EQ(load_model_vocab(loaded, "").hash(), vocab.hash());
  }
  LoadedModel loaded = load_model(c.run.dir);
  // A vocabulary of another size is refused, naming both sizes.
  const std::string small = dir + "/small.txt";
  write_file_atomic(small, "</S>\n<S>\n<UNK>\nx\n");
  try {
    load_model_vocab(loaded, small);
    FAIL() << "no error for a vocabulary of the wrong size";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("has 4 tokens"), std::string::npos) << what;
    EXPECT_NE(what.find("20 rows"), std::string::npos) << what;
  }
  // No vocabulary beside the checkpoint: a usage error asking for --vocab.
  fs::remove(c.run.dir + "/vocab.txt");
  try {
    load_model_vocab(loaded, "");
    FAIL() << "no error without a vocabulary";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("--vocab"), std::string::npos) << e.what();
  }
  // A checkpoint without the model config is refused.
  CheckpointData bare;
  bare.step = 1;
  bare.state["tokens"] = 0;
  bare.files.emplace_back("model", model_tensors(*model));
  save_checkpoint(dir + "/bare", bare, 0);
  EXPECT_THROW(load_model(dir + "/bare"), Error);
}

}  // namespace
}  // namespace elmo
