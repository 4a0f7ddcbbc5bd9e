// train --init-from (app/init_from.h): rows of shared words copied by token, new words as a
// fresh run would have them, dropped words gone, LSTM weights copied, the optimizer fresh or
// kept (matched rows); end to end from an imported allennlp fixture and from HDF5 files; every
// bad input (sizes, vocabularies, flag combinations) a usage error naming what to change.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "app/init_from.h"
#include "app/session.h"
#include "io/atomic_file.h"
#include "model/embedding.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

namespace fs = std::filesystem;
using testing::run_elmo;

BilmShape small_shape(int64_t vocab) {
  BilmShape s;
  s.vocab = vocab;
  s.embedding_dim = 8;
  s.cell_size = 12;
  s.proj_dim = 8;
  s.layers = 2;
  return s;
}

BilmTrainOptions sampled() {
  BilmTrainOptions o;
  o.samples = 3;
  return o;
}

OptimizerOptions adagrad() { return OptimizerOptions{}; }

std::vector<float> row(const Tensor& t, int64_t r) {
  const int64_t width = t.numel() / t.size(0);
  return std::vector<float>(t.data<float>() + r * width, t.data<float>() + (r + 1) * width);
}

TEST(InitFrom, MapsRowsByToken) {
  const Vocab from = Vocab::from_tokens({"</S>", "<S>", "<UNK>", "a", "b", "c"});
  const Vocab to = Vocab::from_tokens({"</S>", "<S>", "<UNK>", "c", "x", "a"});
  EXPECT_EQ(map_vocab_rows(from, to), (std::vector<int32_t>{0, 1, 2, 5, -1, 3}));
}

// Source vocabulary: specials, a, b, c, d. Target: specials, b, x, d, y. b, d and the specials
// are matched; x, y are new; a, c are dropped.
struct TwoModels {
  Vocab source_vocab = Vocab::from_tokens({"</S>", "<S>", "<UNK>", "a", "b", "c", "d"});
  Vocab target_vocab = Vocab::from_tokens({"</S>", "<S>", "<UNK>", "b", "x", "d", "y"});
  BiLM source{small_shape(7), sampled()};
  BiLM target{small_shape(7), sampled()};
  BiLM fresh{small_shape(7), sampled()};  // what a run without --init-from starts from
  TwoModels() {
    source.init(1, 0.05f, 1.0f);
    target.init(2, 0.05f, 1.0f);
    fresh.init(2, 0.05f, 1.0f);
  }
  InitSource init_source() const {
    InitSource s;
    s.origin = "test source";
    s.sizes = {8, 12, 8, 2, true};
    s.model = model_tensors(source);
    s.vocab = source_vocab;
    return s;
  }
};

TEST(InitFrom, CopiesSharedRowsKeepsFreshRowsForNewWordsAndTheLstm) {
  TwoModels m;
  Optimizer optimizer(m.target.params(), adagrad());
  // Training text: b b x d <UNK> (ids of the target vocabulary): b, d and <UNK> are matched.
  const TokenCache data = TokenCache::from_sentences({{{3, 3, 4}, {5, 2}}}, 7);
  const InitReport report =
      apply_init_source(m.init_source(), m.target_vocab, m.target, optimizer, false, data);
  EXPECT_EQ(report.matched, 5);
  EXPECT_EQ(report.added, 2);
  EXPECT_EQ(report.dropped, 2);
  EXPECT_DOUBLE_EQ(report.matched_token_share, 4.0 / 5.0);
  EXPECT_TRUE(report.fresh_tables.empty());
  EXPECT_FALSE(report.optimizer_kept);
  const std::vector<int32_t> source_row = {0, 1, 2, 4, -1, 6, -1};  // target id -> source id
  for (const char* table : {kEmbeddingWeight, "softmax.weight", "softmax.bias"}) {
    const Tensor& got = m.target.params().get(table).value;
    for (int64_t id = 0; id < 7; ++id) {
      const Tensor& want = source_row[id] >= 0 ? m.source.params().get(table).value
                                               : m.fresh.params().get(table).value;
      EXPECT_EQ(row(got, id), row(want, source_row[id] >= 0 ? source_row[id] : id))
          << table << " row " << id;
    }
  }
  for (const Parameter* p : m.target.params().all()) {
    if (p->name.rfind("lstm.", 0) != 0) continue;
    EXPECT_EQ(row(p->value.reshape({p->value.numel()}), 0),
              row(m.source.params().get(p->name).value.reshape({p->value.numel()}), 0))
        << p->name;
  }
  // The optimizer stays fresh.
  for (const auto& [name, acc] : optimizer.state_tensors())
    for (int64_t i = 0; i < acc.numel(); ++i) ASSERT_EQ(acc.data<float>()[i], 1.0f) << name;
}

TEST(InitFrom, KeepsTheAccumulatorsOfMatchedRowsAndDenseParameters) {
  TwoModels m;
  Optimizer source_optimizer(m.source.params(), adagrad());
  InitSource source = m.init_source();
  float value = 2.0f;
  for (auto& [name, acc] : source_optimizer.state_tensors()) {
    for (int64_t i = 0; i < acc.numel(); ++i) acc.data<float>()[i] = value + 0.001f * i;
    source.optimizer.emplace_back(name, acc);
    value += 1.0f;
  }
  Optimizer optimizer(m.target.params(), adagrad());
  const TokenCache data = TokenCache::from_sentences({{{3}}}, 7);
  const InitReport report =
      apply_init_source(source, m.target_vocab, m.target, optimizer, true, data);
  EXPECT_TRUE(report.optimizer_kept);
  const std::vector<int32_t> source_row = {0, 1, 2, 4, -1, 6, -1};
  for (const auto& [name, acc] : optimizer.state_tensors()) {
    const Tensor* src = nullptr;
    for (const auto& [n, t] : source.optimizer)
      if (n == name) src = &t;
    ASSERT_NE(src, nullptr) << name;
    const std::string param = name.substr(0, name.find(".adagrad_acc"));
    if (param == kEmbeddingWeight || param.rfind("softmax.", 0) == 0) {
      for (int64_t id = 0; id < 7; ++id) {
        if (source_row[id] >= 0)
          EXPECT_EQ(row(acc, id), row(*src, source_row[id])) << name << " row " << id;
        else
          EXPECT_EQ(row(acc, id), std::vector<float>(acc.numel() / 7, 1.0f)) << name << " " << id;
      }
    } else {
      EXPECT_EQ(row(acc.reshape({acc.numel()}), 0), row(src->reshape({src->numel()}), 0)) << name;
    }
  }
}

TEST(InitFrom, TablesTheSourceLacksStayFresh) {
  TwoModels m;
  InitSource source = m.init_source();
  NamedTensors lstm_only;
  for (const auto& [name, t] : source.model)
    if (name.rfind("lstm.", 0) == 0 || name == kEmbeddingWeight) lstm_only.emplace_back(name, t);
  source.model = lstm_only;
  source.absent_tables = {"softmax.weight", "softmax.bias"};
  Optimizer optimizer(m.target.params(), adagrad());
  const InitReport report = apply_init_source(source, m.target_vocab, m.target, optimizer, false,
                                              TokenCache::from_sentences({{{3}}}, 7));
  EXPECT_EQ(report.fresh_tables, (std::vector<std::string>{"softmax.weight", "softmax.bias"}));
  for (const char* table : {"softmax.weight", "softmax.bias"})
    for (int64_t id = 0; id < 7; ++id)
      EXPECT_EQ(row(m.target.params().get(table).value, id),
                row(m.fresh.params().get(table).value, id));
}

TEST(InitFrom, SizeMismatchesAreNamedTogetherWithTheFix) {
  InitSource source;
  source.origin = "src";
  source.sizes = {16, 64, 16, 2, true};
  Config config;
  config.model.cell_size = 32;
  config.model.layers = 3;
  config.model.projection_dim = 16;
  config.model.bidirectional = false;
  const std::string message = testing::error_of([&] { check_sizes_match(source, config); });
  for (const char* part :
       {"model.cell_size = 32 but the source has 64", "model.layers = 3 but the source has 2",
        "model.bidirectional = false", "--set model.cell_size=64", "--set model.layers=2",
        "--set model.bidirectional=true"})
    EXPECT_NE(message.find(part), std::string::npos) << part << "\n" << message;
  EXPECT_EQ(message.find("embedding_dim"), std::string::npos) << message;  // 16 = 16
  config.model.embedding_dim = 24;
  config.model.cell_size = 64;
  config.model.layers = 2;
  config.model.bidirectional = true;
  EXPECT_NE(testing::error_of([&] {
              check_sizes_match(source, config);
            }).find("model.embedding_dim = 24 but the source has 16"),
            std::string::npos);
  config.model.embedding_dim = 0;
  EXPECT_EQ(testing::error_of([&] { check_sizes_match(source, config); }), "");
}

TEST(InitFrom, FlagCombinationsAreCheckedFirst) {
  const auto usage = [](const InitSourceArgs& args, bool resume) {
    return testing::error_of([&] { check_init_args(args, resume); });
  };
  EXPECT_NE(usage({"", "v.txt", false}, false).find("--init-vocab needs --init-from"),
            std::string::npos);
  EXPECT_NE(usage({"", "", true}, false).find("--init-optimizer needs --init-from"),
            std::string::npos);
  const std::string dir = testing::temp_dir("init_flags");
  EXPECT_NE(usage({dir, "", false}, true).find("--resume"), std::string::npos);
  EXPECT_NE(usage({dir + "/missing", "", false}, false).find("no such checkpoint folder or HDF5"),
            std::string::npos);
  const std::string file = testing::write_text_file(dir, "w.hdf5", "x");
  EXPECT_NE(usage({file, "", true}, false).find("without optimizer state"), std::string::npos);
  EXPECT_EQ(usage({dir, "", true}, false), "");
  // A vocabulary that is not there, or a folder given as one.
  EXPECT_NE(usage({file, dir + "/nope.txt", false}, false)
                .find("--init-vocab " + dir + "/nope.txt: no such file"),
            std::string::npos);
  EXPECT_NE(usage({file, dir, false}, false).find("no such file"), std::string::npos);
  EXPECT_EQ(usage({file, file, false}, false), "");
}

// ---- end to end, from the allennlp fixture (shared/data) ------------------------------------

std::string fixture() { return testing::data_dir() + "/elmo-fixtures/allennlp/elmo"; }

// The fixture's sizes on the 1B-word sample, two steps.
std::string finetune_config(const std::string& run_dir, const std::string& extra = "") {
  const std::string sample = testing::data_dir() + "/lm1b-sample";
  return "[run]\ndir = \"" + run_dir +
         "\"\n"
         "[data]\ncorpus = \"" +
         sample +
         "/shard[0-4]\"\n"
         "[model]\nembedding_dim = 16\ncell_size = 64\nprojection_dim = 16\nlayers = 2\n"
         "[softmax]\nsamples = 200\n"
         "[train]\nbatch_size = 8\nunroll_steps = 10\nmax_steps = 2\nthreads = 2\n"
         "device = \"cpu\"\n"
         "[checkpoint]\nevery_steps = 0\n" +
         extra;
}

struct Imported {
  std::string dir, checkpoint;
};

Imported import_fixture(const std::string& tag) {
  Imported out;
  out.dir = testing::temp_dir(tag);
  out.checkpoint = out.dir + "/fixture";
  const auto r = run_elmo("import-bilm --weights " + fixture() + "/lm_weights.hdf5 --embedding " +
                          fixture() + "/elmo_token_embeddings.hdf5 --vocab " + fixture() +
                          "/vocab_test.txt --out " + out.checkpoint);
  EXPECT_EQ(r.status, 0) << r.output;
  return out;
}

TEST(InitFrom, FineTunesTheImportedFixtureWithTheSamplesVocabulary) {
  ELMO_SKIP_WITHOUT_DATA();
  const Imported src = import_fixture("init_e2e");
  const std::string config =
      testing::write_text_file(src.dir, "ft.toml", finetune_config(src.dir + "/run"));
  const auto r = run_elmo("train --config " + config + " --init-from " + src.checkpoint);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("vocabulary rows matched"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("softmax.weight, softmax.bias not in"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("of the training tokens"), std::string::npos) << r.output;
  const auto summary = nlohmann::json::parse(read_file(src.dir + "/run/summary.json"));
  const nlohmann::json& init = summary.at("init_from");
  const auto vocab = Vocab::load(src.dir + "/run/vocab.txt");
  // Every fixture token the five shards contain is matched; the fixture has 458 rows.
  EXPECT_GT(init.at("rows_matched").get<int64_t>(), 400);
  EXPECT_EQ(init.at("rows_matched").get<int64_t>() + init.at("rows_added").get<int64_t>(),
            vocab.size());
  EXPECT_EQ(init.at("rows_matched").get<int64_t>() + init.at("rows_dropped").get<int64_t>(), 458);
  EXPECT_GT(init.at("matched_token_share").get<double>(), 0.2);
  EXPECT_LT(init.at("matched_token_share").get<double>(), 1.0);
  EXPECT_EQ(init.at("fresh_tables"), nlohmann::json({"softmax.weight", "softmax.bias"}));
  // The run's checkpoints record it, and the run resumes as an ordinary run.
  const auto state =
      nlohmann::json::parse(read_file(src.dir + "/run/checkpoints/step-2/state.json"));
  EXPECT_EQ(state.at("init_from"), init);
  const auto resumed = run_elmo("train --config " + config + " --resume --set train.max_steps=3");
  EXPECT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from step 2"), std::string::npos) << resumed.output;
}

TEST(InitFrom, StartsFromAnHdf5WithOrWithoutTables) {
  ELMO_SKIP_WITHOUT_DATA();
  const std::string dir = testing::temp_dir("init_hdf5");
  // lm_weights.hdf5 holds the LSTM only: every table starts fresh, no vocabulary needed.
  const std::string config = testing::write_text_file(dir, "a.toml", finetune_config(dir + "/a"));
  const auto lstm_only =
      run_elmo("train --config " + config + " --init-from " + fixture() + "/lm_weights.hdf5");
  ASSERT_EQ(lstm_only.status, 0) << lstm_only.output;
  EXPECT_NE(lstm_only.output.find("embedding.weight, softmax.weight, softmax.bias not in"),
            std::string::npos)
      << lstm_only.output;
  EXPECT_NE(lstm_only.output.find("does not record clips"), std::string::npos);
  // An export holds the embedding and softmax: their vocabulary is required and checked.
  const Imported src = import_fixture("init_hdf5_src");
  const std::string h5 = dir + "/exported.hdf5";
  ASSERT_EQ(run_elmo("export-bilm --checkpoint " + src.checkpoint + " --out " + h5).status, 0);
  const std::string b = testing::write_text_file(dir, "b.toml", finetune_config(dir + "/b"));
  const auto no_vocab = run_elmo("train --config " + b + " --init-from " + h5);
  EXPECT_EQ(no_vocab.status, 2) << no_vocab.output;
  EXPECT_NE(no_vocab.output.find("--init-vocab FILE"), std::string::npos) << no_vocab.output;
  const std::string wrong = testing::write_text_file(dir, "wrong.txt", "</S>\n<S>\n<UNK>\nthe\n");
  const auto wrong_vocab =
      run_elmo("train --config " + b + " --init-from " + h5 + " --init-vocab " + wrong);
  EXPECT_EQ(wrong_vocab.status, 2) << wrong_vocab.output;
  EXPECT_NE(wrong_vocab.output.find("has 4 tokens but embedding.weight"), std::string::npos)
      << wrong_vocab.output;
  const auto ok = run_elmo("train --config " + b + " --init-from " + h5 + " --init-vocab " +
                           fixture() + "/vocab_test.txt");
  EXPECT_EQ(ok.status, 0) << ok.output;
  EXPECT_EQ(ok.output.find("not in"), std::string::npos) << ok.output;  // both tables copied
}

TEST(InitFrom, BadInputsAreUsageErrors) {
  ELMO_SKIP_WITHOUT_DATA();
  const Imported src = import_fixture("init_bad");
  const std::string config =
      testing::write_text_file(src.dir, "c.toml", finetune_config(src.dir + "/run"));
  const std::string train = "train --config " + config + " --init-from " + src.checkpoint;
  struct Case {
    std::string args, expect;
  };
  const std::string no_vocab_dir = src.dir + "/copied-checkpoint";  // without vocab.txt
  fs::copy(src.checkpoint + "/checkpoints/step-0", no_vocab_dir);
  for (const Case& c : std::vector<Case>{
           {" --set model.cell_size=32 --set model.layers=1",
            "model.cell_size = 32 but the source has 64; model.layers = 1 but the source has 2"},
           {" --set model.projection_dim=8", "--set model.projection_dim=16"},
           {" --resume", "--resume continues"},
           {" --init-optimizer", "has no Adagrad accumulators"},
           {" --init-vocab " + fixture() + "/../../bilm-tf/train/vocab.txt", "has 32 tokens"},
       }) {
    const auto r = run_elmo(train + c.args);
    EXPECT_EQ(r.status, 2) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.args << "\n" << r.output;
    EXPECT_FALSE(fs::exists(src.dir + "/run/checkpoints")) << c.args;
  }
  for (const Case& c : std::vector<Case>{
           {"--init-from " + src.dir + "/nothing", "no such checkpoint folder"},
           {"--init-from " + no_vocab_dir, "no vocabulary at"},
           {"--init-vocab " + fixture() + "/vocab_test.txt", "--init-vocab needs --init-from"},
           {"--init-from " + src.checkpoint + " --init-vocab " + src.dir + "/missing-vocab.txt",
            "missing-vocab.txt: no such file"},
           {"--init-from " + fixture() + "/lm_weights.hdf5 --init-optimizer",
            "without optimizer state"},
       }) {
    const auto r = run_elmo("train --config " + config + " " + c.args);
    EXPECT_EQ(r.status, 2) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.args << "\n" << r.output;
  }
}

// --init-optimizer from a trained run: its accumulators reach the new run.
TEST(InitFrom, InitOptimizerKeepsTheTrainedAccumulators) {
  ELMO_SKIP_WITHOUT_DATA();
  const std::string dir = testing::temp_dir("init_optimizer");
  const std::string base =
      testing::write_text_file(dir, "base.toml", finetune_config(dir + "/base"));
  // A small starting accumulator, so that the base run's differs from a fresh one's.
  ASSERT_EQ(
      run_elmo("train --config " + base + " --set optimizer.initial_accumulator=0.001").status, 0);
  for (const char* name : {"fresh", "keep"}) {
    const std::string c = testing::write_text_file(dir, std::string(name) + ".toml",
                                                   finetune_config(dir + "/" + name));
    const auto r =
        run_elmo("train --config " + c + " --init-from " + dir + "/base --set " +
                 "train.max_steps=1" + (std::string(name) == "keep" ? " --init-optimizer" : ""));
    ASSERT_EQ(r.status, 0) << r.output;
  }
  // Both new runs start from the base's weights with the same data and seed, so their first
  // step has the same gradient g: fresh = 1 + g^2 (the default start), kept = base + g^2.
  const auto accumulator = [](const std::string& run, const std::string& name) {
    const CheckpointData c = load_checkpoint(run);
    for (const auto& [n, t] : *c.file("optimizer"))
      if (n == name) return t.to_floats();
    return std::vector<float>{};
  };
  for (const std::string name :
       {"lstm.fwd.0.weight_hh.adagrad_acc", "embedding.weight.adagrad_acc"}) {
    const auto base = accumulator(dir + "/base", name), fresh = accumulator(dir + "/fresh", name),
               keep = accumulator(dir + "/keep", name);
    ASSERT_FALSE(base.empty()) << name;
    ASSERT_EQ(base.size(), keep.size());
    ASSERT_EQ(base.size(), fresh.size());
    double worst = 0.0;
    for (size_t i = 0; i < base.size(); ++i) {
      ASSERT_GE(keep[i], base[i]) << name << " " << i;
      ASSERT_LT(base[i], 0.5f) << name << " " << i;  // the base's, not a fresh 1
      worst = std::max(worst, std::abs((static_cast<double>(keep[i]) - base[i]) -
                                       (static_cast<double>(fresh[i]) - 1.0)));
    }
    EXPECT_LT(worst, 1e-5) << name;
  }
  EXPECT_EQ(
      nlohmann::json::parse(read_file(dir + "/keep/summary.json"))["init_from"]["optimizer_kept"],
      true);
}

}  // namespace
}  // namespace elmo
