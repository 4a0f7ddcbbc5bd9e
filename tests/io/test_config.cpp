#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <set>

#include "io/atomic_file.h"
#include "io/config.h"
#include "runtime/error.h"
#include "runtime/gemm.h"
#include "tests/support/test_util.h"

namespace elmo {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// The UsageError message of parsing `text` as "run.toml" (fails the test when it parses).
std::string error_of(const std::string& text, const std::vector<std::string>& overrides = {}) {
  try {
    config_from_string(text, "run.toml", overrides);
  } catch (const UsageError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a UsageError for:\n" << text;
  return "";
}

TEST(Config, EmptyFileGivesDefaults) {
  const Config c = config_from_string("", "run.toml");
  EXPECT_EQ(c, Config{});
  EXPECT_EQ(c.run.dir, "runs/default");
  EXPECT_EQ(c.run.seed, 1234);
  EXPECT_EQ(c.data.corpus, "builtin:synthetic");
  EXPECT_EQ(c.model.cell_size, 512);
  EXPECT_EQ(c.model.projection_dim, 128);
  EXPECT_EQ(c.model.input_dim(), 128);  // embedding_dim 0 -> projection_dim
  EXPECT_EQ(c.softmax.samples, 8192);
  EXPECT_EQ(c.train.device, "auto");
  EXPECT_DOUBLE_EQ(c.optimizer.learning_rate, 0.2);
  EXPECT_EQ(c.eval.mode, "stream");
  // The keys of the TF PTB recipe default to what every run did before they existed.
  EXPECT_EQ(c.data.packing, "sentences");
  EXPECT_DOUBLE_EQ(c.model.forget_bias, 1.0);
  EXPECT_EQ(c.model.softmax_bias_init, "zero");
}

TEST(Config, ResolvedWidths) {
  ModelConfig m;
  m.projection_dim = 0;
  m.cell_size = 200;
  EXPECT_EQ(m.output_dim(), 200);
  EXPECT_EQ(m.input_dim(), 200);
  m.embedding_dim = 32;
  EXPECT_EQ(m.input_dim(), 32);
}

TEST(Config, ReadsEveryTypeIncludingDottedKeysAndIntegersForFloats) {
  const Config c = config_from_string(R"(
model.cell_size = 1024
[train]
epochs = 3
device = "cuda:1"
deterministic = false
[optimizer]
learning_rate = 1e-2
[data]
corpus = "data/ptb/ptb.train.txt"
)");
  EXPECT_EQ(c.model.cell_size, 1024);
  EXPECT_DOUBLE_EQ(c.train.epochs, 3.0);
  EXPECT_EQ(c.train.device, "cuda:1");
  EXPECT_FALSE(c.train.deterministic);
  EXPECT_DOUBLE_EQ(c.optimizer.learning_rate, 0.01);
  EXPECT_EQ(c.data.corpus, "data/ptb/ptb.train.txt");
}

TEST(Config, DefaultsAndEditsRoundTripThroughCanonicalToml) {
  EXPECT_EQ(config_from_string(config_to_toml(Config{})), Config{});
  EXPECT_EQ(config_from_string(config_to_toml(Config{}, /*with_comments=*/true)), Config{});

  Config c;
  c.run.dir = "runs/with \"quotes\" \\ and\ttab and ünïcode";
  c.optimizer.epsilon = 1e-7;
  c.optimizer.lr_decay = 1.0 / 1.15;
  c.model.dropout = 0.1 + 0.2;  // not representable as a short decimal
  c.train.epochs = 2.0;
  c.train.max_steps = 123456789012;
  c.metrics.tensorboard = false;
  c.eval.mode = "sentence";
  const Config back = config_from_string(config_to_toml(c));
  EXPECT_EQ(back, c);
  EXPECT_EQ(config_to_toml(back), config_to_toml(c));
}

TEST(Config, CanonicalDumpListsEverySectionInOrder) {
  const std::string text = config_to_toml(Config{});
  size_t previous = 0;
  for (const std::string& section : config_sections()) {
    const size_t at = text.find("[" + section + "]\n");
    ASSERT_NE(at, std::string::npos) << section;
    EXPECT_GE(at, previous) << section;
    previous = at;
  }
  EXPECT_THAT(text, HasSubstr("cell_size = 512\n"));
  EXPECT_THAT(text, HasSubstr("epochs = 1.0\n"));
  EXPECT_THAT(text, HasSubstr("corpus = \"builtin:synthetic\"\n"));
  EXPECT_EQ(config_sections().size(), 11u);
}

TEST(Config, MalformedTomlNamesLineAndColumn) {
  const std::string message = error_of("[model]\ncell_size = = 3\n");
  EXPECT_THAT(message, ::testing::MatchesRegex("run\\.toml:2:[0-9]+: .+"));
}

TEST(Config, UnknownKeySuggestsTheClosestKey) {
  const std::string text =
      "# comment\n[run]\nseed = 1\n\n[model]\ncell_size = 64\ncell_sise = 64\n";
  EXPECT_EQ(error_of(text),
            "run.toml:7: unknown key 'model.cell_sise' (did you mean 'model.cell_size'?)");
}

TEST(Config, UnknownSectionAndStrayKeysAreNamed) {
  EXPECT_EQ(error_of("[modle]\ncell_size = 3\n"),
            "run.toml:1: unknown section 'modle' (did you mean 'model'?)");
  EXPECT_EQ(error_of("seed = 3\n"),
            "run.toml:1: unknown key 'seed' (did you mean 'run.seed' or 'synthetic.seed'?)");
  // The right name in the wrong section points to the right section.
  EXPECT_EQ(error_of("[train]\ndropout = 0.2\n"),
            "run.toml:2: unknown key 'train.dropout' (did you mean 'model.dropout'?)");
  // Nothing close: no suggestion.
  EXPECT_EQ(error_of("[model]\nflux_capacitor = 1\n"),
            "run.toml:2: unknown key 'model.flux_capacitor'");
  EXPECT_THAT(error_of("model = 3\n"), StartsWith("run.toml:1: 'model' must be a table"));
  EXPECT_THAT(error_of("[model.inner]\nx = 1\n"), HasSubstr("unknown key 'model.inner'"));
}

TEST(Config, WrongTypeNamesKeyAndBothTypes) {
  const std::string text = "[run]\nseed = 1\n\n\n\n\n\n[train]\nbatch_size = \"64\"\n";
  EXPECT_EQ(error_of(text), "run.toml:9: 'train.batch_size' must be an integer, got string");
  EXPECT_EQ(error_of("[train]\nbatch_size = 64.0\n"),
            "run.toml:2: 'train.batch_size' must be an integer, got float");
  EXPECT_EQ(error_of("[model]\nbidirectional = 1\n"),
            "run.toml:2: 'model.bidirectional' must be a boolean (true or false), got integer");
  EXPECT_EQ(error_of("[model]\ndropout = \"0.1\"\n"),
            "run.toml:2: 'model.dropout' must be a number, got string");
  EXPECT_EQ(error_of("[data]\ncorpus = [\"a\", \"b\"]\n"),
            "run.toml:2: 'data.corpus' must be a string, got array");
}

TEST(Config, OutOfRangeShowsTheRange) {
  const std::string text = "[run]\nseed = 1\n\n\n\n\n\n[train]\nbatch_size = -4\n";
  EXPECT_EQ(error_of(text), "run.toml:9: 'train.batch_size' = -4 is out of range (1 .. 1048576)");
  EXPECT_EQ(error_of("[model]\ndropout = 1.0\n"),
            "run.toml:2: 'model.dropout' = 1.0 is out of range [0, 1)");
  EXPECT_EQ(error_of("[optimizer]\nlearning_rate = 0\n"),
            "run.toml:2: 'optimizer.learning_rate' = 0.0 is out of range (0, 1000000]");
  EXPECT_THAT(error_of("[model]\ndropout = nan\n"), HasSubstr("'model.dropout' = nan is out"));
  EXPECT_THAT(error_of("[model]\ncell_clip = -1.0\n"), HasSubstr("out of range"));
  // Absurd sizes.
  EXPECT_THAT(error_of("[model]\ncell_size = 100000\n"), HasSubstr("(1 .. 65536)"));
  EXPECT_THAT(error_of("[model]\nlayers = 0\n"), HasSubstr("(1 .. 16)"));
  EXPECT_THAT(error_of("[model]\nlayers = 17\n"), HasSubstr("(1 .. 16)"));
  EXPECT_THAT(error_of("[softmax]\nsamples = 60000000\n"), HasSubstr("(1 .. 50000000)"));
  EXPECT_THAT(error_of("[train]\nunroll_steps = 0\n"), HasSubstr("(1 .. 10000)"));
  EXPECT_THAT(error_of("[optimizer]\nclip_norm = -0.5\n"), HasSubstr("out of range"));
  EXPECT_THAT(error_of("[run]\nseed = -1\n"), HasSubstr("'run.seed' = -1 is out of range (>= 0)"));
}

TEST(Config, BadEnumListsChoicesAndSuggests) {
  EXPECT_EQ(error_of("[eval]\nmode = \"strem\"\n"),
            "run.toml:2: 'eval.mode' = \"strem\" is not one of: stream | sentence (did you "
            "mean 'stream'?)");
  EXPECT_THAT(error_of("[softmax]\ntype = \"hierarchical\"\n"),
              HasSubstr("is not one of: sampled | full"));
  EXPECT_THAT(error_of("[optimizer]\ntype = \"adam\"\n"),
              HasSubstr("is not one of: adagrad | sgd"));
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "cuda:-1", "CPU", "cuda:123456"})
    EXPECT_THAT(error_of(str("[train]\ndevice = \"", bad, "\"\n")),
                HasSubstr("'train.device' = \"" + std::string(bad) + "\" is not one of"))
        << bad;
  for (const char* good : {"auto", "cpu", "cuda", "cuda:0", "cuda:15"})
    EXPECT_EQ(config_from_string(str("[train]\ndevice = \"", good, "\"\n")).train.device, good);
  EXPECT_THAT(error_of("[run]\ndir = \"\"\n"), HasSubstr("'run.dir' must not be empty"));
}

TEST(Config, PrecisionIsOneOfTheGemmModes) {
  EXPECT_EQ(Config{}.train.precision, "fp32");
  // Every accepted value is one the runtime parses, and names the same mode back: the config
  // choices and runtime/gemm.h's GemmPrecision cannot drift apart.
  for (const char* good : {"fp32", "tf32", "bf16"}) {
    const Config c = config_from_string(str("[train]\nprecision = \"", good, "\"\n"));
    EXPECT_EQ(c.train.precision, good);
    EXPECT_STREQ(gemm_precision_name(parse_gemm_precision(c.train.precision)), good);
    EXPECT_EQ(config_from_string("", "x", {str("train.precision=", good)}).train.precision, good);
  }
  EXPECT_EQ(error_of("[train]\nprecision = \"bf61\"\n"),
            "run.toml:2: 'train.precision' = \"bf61\" is not one of: fp32 | tf32 | bf16 (did you "
            "mean 'bf16'?)");
  EXPECT_THAT(error_of("[train]\nprecision = \"fp16\"\n"),
              HasSubstr("'train.precision' = \"fp16\" is not one of: fp32 | tf32 | bf16"));
  EXPECT_THAT(error_of("[train]\nprecision = \"FP32\"\n"), HasSubstr("is not one of"));
  EXPECT_EQ(error_of("[train]\nprecision = 16\n"),
            "run.toml:2: 'train.precision' must be a string, got integer");
  EXPECT_THAT(error_of("", {"train.precision=half"}),
              StartsWith("--set train.precision=half: 'train.precision' = \"half\" is not one "
                         "of: fp32 | tf32 | bf16"));
  // The canonical dump carries it (checkpoints record the precision a run was trained with).
  Config c;
  c.train.precision = "bf16";
  EXPECT_THAT(config_to_toml(c), HasSubstr("precision = \"bf16\"\n"));
  EXPECT_EQ(config_from_string(config_to_toml(c)), c);
}

TEST(Config, ReportsEveryProblemInLineOrder) {
  const std::string message = error_of("[train]\nbatch_size = 0\n[model]\nlayers = 99\n");
  EXPECT_EQ(message,
            "run.toml:2: 'train.batch_size' = 0 is out of range (1 .. 1048576)\n"
            "run.toml:4: 'model.layers' = 99 is out of range (1 .. 16)");
}

TEST(Config, CrossKeyChecksPointAtTheKey) {
  EXPECT_THAT(error_of("[synthetic]\nvocab_size = 10\nclasses = 20\n"),
              StartsWith("run.toml:3: 'synthetic.classes' = 20 must not exceed"));
  EXPECT_THAT(error_of("[synthetic]\nvocab_size = 1000000\nclasses = 200\n"),
              HasSubstr("too large"));
  EXPECT_THAT(error_of("[train]\nepochs = 0\n"), HasSubstr("leave nothing to train"));
  EXPECT_NO_THROW(config_from_string("[train]\nepochs = 0\nmax_steps = 10\n"));
  EXPECT_THAT(error_of("[optimizer]\ninitial_accumulator = 0\nepsilon = 0\n"),
              HasSubstr("divides by zero"));
  EXPECT_NO_THROW(
      config_from_string("[optimizer]\ntype = \"sgd\"\ninitial_accumulator = 0\n"
                         "epsilon = 0\n"));
  Config c;
  c.synthetic.classes = c.synthetic.vocab_size + 1;
  EXPECT_THROW(validate_config(c), UsageError);
}

// data.packing, model.forget_bias, model.softmax_bias_init: their values, the ones refused,
// and the combinations contiguous packing cannot train (a backward LM, shuffled sentences).
TEST(Config, PtbRecipeKeysAndTheCombinationsContiguousPackingRefuses) {
  const Config c = config_from_string(
      "[data]\npacking = \"contiguous\"\nshuffle = false\n[model]\nbidirectional = false\n"
      "forget_bias = 0.0\nsoftmax_bias_init = \"uniform\"\n");
  EXPECT_EQ(c.data.packing, "contiguous");
  EXPECT_DOUBLE_EQ(c.model.forget_bias, 0.0);
  EXPECT_EQ(c.model.softmax_bias_init, "uniform");
  EXPECT_EQ(config_from_string(config_to_toml(c)), c);
  EXPECT_EQ(config_from_string("[model]\nforget_bias = -2\n").model.forget_bias, -2.0);
  EXPECT_EQ(error_of("[data]\npacking = \"contiguos\"\n"),
            "run.toml:2: 'data.packing' = \"contiguos\" is not one of: sentences | contiguous "
            "(did you mean 'contiguous'?)");
  EXPECT_THAT(error_of("[data]\npacking = true\n"), HasSubstr("must be a string"));
  EXPECT_EQ(error_of("[model]\nforget_bias = 1000\n"),
            "run.toml:2: 'model.forget_bias' = 1000.0 is out of range [-100, 100]");
  EXPECT_THAT(error_of("[model]\nforget_bias = nan\n"), HasSubstr("is out of range"));
  EXPECT_THAT(error_of("[model]\nforget_bias = \"one\"\n"), HasSubstr("must be a number"));
  EXPECT_THAT(error_of("[model]\nsoftmax_bias_init = \"normal\"\n"),
              HasSubstr("'model.softmax_bias_init' = \"normal\" is not one of: zero | uniform"));
  // Contiguous packing is a forward LM over the text in order.
  EXPECT_THAT(error_of("[data]\npacking = \"contiguous\"\nshuffle = false\n"),
              AllOf(StartsWith("run.toml:2: 'data.packing' = \"contiguous\""),
                    HasSubstr("set model.bidirectional = false")));
  EXPECT_THAT(error_of("[data]\npacking = \"contiguous\"\n[model]\nbidirectional = false\n"),
              AllOf(StartsWith("run.toml:2:"), HasSubstr("set data.shuffle = false")));
  EXPECT_THAT(error_of("[model]\nbidirectional = false\n", {"data.packing=contiguous"}),
              StartsWith("--set data.packing=contiguous: 'data.packing' = \"contiguous\""));
  EXPECT_NO_THROW(config_from_string("[model]\nbidirectional = false\n", "run.toml",
                                     {"data.packing=contiguous", "data.shuffle=false"}));
}

TEST(Config, EvaluationSliceBoundsAreCheckedAndOrdered) {
  const Config set = config_from_string("[eval]\nhead_ids = 100\ntorso_ids = 1000\n");
  EXPECT_EQ(set.eval.head_ids, 100);
  EXPECT_EQ(set.eval.torso_ids, 1000);
  EXPECT_EQ(Config().eval.head_ids, 0);  // 0 = the most frequent 1% (app/eval_slices.h)
  EXPECT_EQ(Config().eval.torso_ids, 0);
  EXPECT_NO_THROW(config_from_string("[eval]\nhead_ids = 5000\n"));  // torso: from the vocab
  EXPECT_THAT(error_of("[eval]\nhead_ids = -1\n"),
              HasSubstr("'eval.head_ids' = -1 is out of range (>= 0)"));
  EXPECT_THAT(error_of("[eval]\ntorso_ids = 1.5\n"),
              HasSubstr("'eval.torso_ids' must be an integer"));
  EXPECT_THAT(error_of("[eval]\nhead_ids = 200\ntorso_ids = 200\n"),
              StartsWith("run.toml:2: 'eval.head_ids' = 200 must be below 'eval.torso_ids' = 200"));
  EXPECT_THAT(error_of("[eval]\nhead_ids = 300\ntorso_ids = 200\n"), HasSubstr("must be below"));
  EXPECT_THAT(error_of("", {"eval.torso_ids=x"}), HasSubstr("eval.torso_ids"));
}

TEST(Config, OverridesApplyAfterTheFile) {
  const Config c = config_from_string(
      "[train]\nbatch_size = 64\n", "run.toml",
      {"train.batch_size=32", "model.dropout=0.25", "model.bidirectional=false",
       "train.device=cuda:1", "run.dir=runs/x y", "data.corpus=\"quoted/path.txt\"",
       " train.epochs = 2 ", "optimizer.epsilon=1e-8", "data.valid=", "run.dir='literal'"});
  EXPECT_EQ(c.train.batch_size, 32);
  EXPECT_DOUBLE_EQ(c.model.dropout, 0.25);
  EXPECT_FALSE(c.model.bidirectional);
  EXPECT_EQ(c.train.device, "cuda:1");
  EXPECT_EQ(c.data.corpus, "quoted/path.txt");
  EXPECT_DOUBLE_EQ(c.train.epochs, 2.0);
  EXPECT_DOUBLE_EQ(c.optimizer.epsilon, 1e-8);
  EXPECT_EQ(c.data.valid, "");
  EXPECT_EQ(c.run.dir, "literal");  // the last override of a key wins
  // A string key keeps a bare number as text.
  EXPECT_EQ(config_from_string("", "x", {"data.vocab=123"}).data.vocab, "123");
}

TEST(Config, BadOverridesNameSet) {
  EXPECT_EQ(error_of("", {"model.cell_sise=5"}),
            "--set model.cell_sise=5: unknown key 'model.cell_sise' (did you mean "
            "'model.cell_size'?)");
  EXPECT_EQ(error_of("", {"train.batch_size=abc"}),
            "--set train.batch_size=abc: 'train.batch_size' must be an integer, got string");
  EXPECT_EQ(error_of("", {"train.batch_size=-4"}),
            "--set train.batch_size=-4: 'train.batch_size' = -4 is out of range (1 .. 1048576)");
  EXPECT_THAT(error_of("", {"train.batch_size"}),
              StartsWith("--set train.batch_size: expected section.key=value"));
  EXPECT_THAT(error_of("", {"batch_size=3"}),
              StartsWith("--set batch_size=3: unknown key 'batch_size' (did you mean "
                         "'train.batch_size' or 'eval.batch_size'?)"));
  EXPECT_THAT(error_of("", {"eval.mode=strem"}), StartsWith("--set eval.mode=strem: "));
  EXPECT_THAT(error_of("", {"run.dir=\"unterminated"}), HasSubstr("malformed quoted string"));
  EXPECT_THAT(error_of("", {"model.dropout=1"}), StartsWith("--set model.dropout=1: "));
  // Cross-key checks see the override as the origin.
  EXPECT_THAT(error_of("", {"synthetic.vocab_size=50", "synthetic.classes=100"}),
              StartsWith("--set synthetic.classes=100: 'synthetic.classes' = 100 must not "
                         "exceed"));
  Config c;
  apply_override(c, "model.layers=3");
  EXPECT_EQ(c.model.layers, 3);
  EXPECT_THROW(apply_override(c, "model.layers=30"), UsageError);
}

// Found by fuzzing (tests/fuzz/corpus/config/crash-set-invalid-utf8): a bare --set word that is
// not UTF-8 was taken, and the config could then not be written back (checkpoints store it).
TEST(Config, BareOverrideWordsMustBeUtf8) {
  EXPECT_EQ(error_of("", {"run.dir=ru\xff"}),
            "--set run.dir=...: the value is not valid UTF-8 text (byte 3)");
  Config c;
  apply_override(c, "run.dir=runs/\xc3\xa9t\xc3\xa9");  // UTF-8 is fine
  EXPECT_EQ(config_from_string(config_to_toml(c)), c);
}

// Suggestions skip keys whose length alone rules them out: a huge unknown key is refused at once
// (it used to cost a length x length table per known key).
TEST(Config, AHugeUnknownKeyIsRefusedQuickly) {
  const std::string key(1 << 20, 'k');
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THAT(error_of("[model]\n" + key + " = 1\n"), HasSubstr("unknown key"));
  EXPECT_THAT(error_of("", {"model." + key + "=1"}), HasSubstr("unknown key"));
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5.0);
  EXPECT_THAT(error_of("", {"model.cell_sise=5"}), HasSubstr("did you mean 'model.cell_size'"));
}

TEST(Config, LoadConfigReadsFilesAndNamesMissingOnes) {
  const std::string dir = testing::temp_dir("config");
  const std::string path = dir + "/my.toml";
  write_file_atomic(path, "[model]\ncell_size = 64\nlayers = 40\n");
  try {
    load_config(path);
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_EQ(std::string(e.what()), path + ":3: 'model.layers' = 40 is out of range (1 .. 16)");
  }
  EXPECT_EQ(load_config(path, {"model.layers=4"}).model.layers, 4);
  try {
    load_config(dir + "/missing.toml");
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_THAT(e.what(), HasSubstr("missing.toml"));
  }
}

TEST(Config, KeyTableIsCompleteAndDocumented) {
  const std::vector<ConfigKeyInfo> keys = describe_keys();
  std::set<std::string> names;
  const std::string dump = config_to_toml(Config{});
  for (const ConfigKeyInfo& k : keys) {
    EXPECT_TRUE(names.insert(k.key).second) << "duplicate " << k.key;
    EXPECT_GE(k.doc.size(), 15u) << k.key;
    EXPECT_EQ(k.doc.find('\n'), std::string::npos) << k.key;
    EXPECT_THAT(k.type, ::testing::AnyOf("integer", "float", "boolean", "string"));
    // The documented default is what the canonical dump writes.
    const std::string name = k.key.substr(k.key.find('.') + 1);
    EXPECT_THAT(dump, HasSubstr("\n" + name + " = " + k.default_value + "\n")) << k.key;
  }
  EXPECT_EQ(keys.size(), 74u);  // update with the table (and README) when adding keys
  const std::string md = config_reference_markdown();
  for (const ConfigKeyInfo& k : keys) EXPECT_THAT(md, HasSubstr("| `" + k.key + "` |"));
  EXPECT_THAT(md, HasSubstr("&lt;UNK&gt;"));
}

TEST(Config, HashesSeparateShapesFromTheRest) {
  Config a;
  Config b = a;
  b.model.dropout = 0.5;
  b.optimizer.learning_rate = 1.0;
  b.model.skip_connections = false;
  EXPECT_EQ(model_shape_hash(a), model_shape_hash(b));
  EXPECT_NE(config_hash(a), config_hash(b));
  b.model.embedding_dim = b.model.projection_dim;  // explicit = implicit width
  EXPECT_EQ(model_shape_hash(a), model_shape_hash(b));
  for (auto edit :
       {+[](Config& c) { c.model.cell_size = 256; }, +[](Config& c) { c.model.projection_dim = 0; },
        +[](Config& c) { c.model.layers = 3; }, +[](Config& c) { c.model.bidirectional = false; },
        +[](Config& c) { c.model.embedding_dim = 64; }}) {
    Config c;
    edit(c);
    EXPECT_NE(model_shape_hash(c), model_shape_hash(a));
  }
  EXPECT_NE(model_shape_hash(a, 1000), model_shape_hash(a, 1001));
  EXPECT_NE(model_shape_hash(a, 1000), model_shape_hash(a));
  EXPECT_EQ(fnv1a64(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(fnv1a64("a"), 0xaf63dc4c8601ec8cull);  // FNV-1a 64 test vector
}

TEST(Config, EveryShippedConfigParses) {
  const std::filesystem::path root = testing::source_dir();
  std::vector<std::filesystem::path> files = {root / "run.toml"};
  for (const auto& entry : std::filesystem::directory_iterator(root / "configs"))
    if (entry.path().extension() == ".toml") files.push_back(entry.path());
  std::set<std::string> names;
  for (const auto& path : files) {
    SCOPED_TRACE(path.string());
    names.insert(path.filename().string());
    EXPECT_NO_THROW(load_config(path.string()));
  }
  for (const char* expected : {"run.toml", "elmo-1b.toml", "ptb-small.toml", "ptb-medium.toml",
                               "ptb-large.toml", "lm1b-sample.toml"})
    EXPECT_TRUE(names.count(expected)) << expected;

  const Config run = load_config((root / "run.toml").string());
  EXPECT_EQ(run.data.corpus, "builtin:synthetic");
  EXPECT_EQ(run.run.dir, "runs/synthetic");

  const Config big = load_config((root / "configs/elmo-1b.toml").string());
  EXPECT_EQ(big.model.cell_size, 4096);
  EXPECT_EQ(big.model.projection_dim, 512);
  EXPECT_EQ(big.softmax.samples, 8192);
  EXPECT_EQ(big.data.vocab, "data/lm1b/vocab.txt");

  const Config large = load_config((root / "configs/ptb-large.toml").string());
  EXPECT_EQ(large.model.cell_size, 1500);
  EXPECT_EQ(large.model.projection_dim, 0);
  EXPECT_FALSE(large.model.bidirectional);
  EXPECT_EQ(large.softmax.type, "full");
  EXPECT_EQ(large.optimizer.type, "sgd");
  EXPECT_NEAR(large.optimizer.lr_decay, 1 / 1.15, 1e-15);
  EXPECT_EQ(large.optimizer.decay_after_epochs, 14);
  EXPECT_EQ(large.train.unroll_steps, 35);
  EXPECT_DOUBLE_EQ(large.train.epochs, 55.0);

  // The PTB configs follow the TF tutorial's recipe; ptb-small-sentences.toml keeps the
  // bilm-tf packing and the default starting values (the issue-17 run of 117.80).
  for (const char* name : {"ptb-small.toml", "ptb-medium.toml", "ptb-large.toml"}) {
    const Config ptb = load_config((root / "configs" / name).string());
    EXPECT_EQ(ptb.data.packing, "contiguous") << name;
    EXPECT_FALSE(ptb.data.shuffle) << name;
    EXPECT_DOUBLE_EQ(ptb.model.forget_bias, 0.0) << name;
    EXPECT_EQ(ptb.model.softmax_bias_init, "uniform") << name;
  }
  const Config sentences = load_config((root / "configs/ptb-small-sentences.toml").string());
  Config expected = load_config((root / "configs/ptb-small.toml").string());
  expected.run.dir = "runs/ptb-small-sentences";
  expected.data.packing = "sentences";
  expected.model.forget_bias = 1.0;
  expected.model.softmax_bias_init = "zero";
  EXPECT_EQ(sentences, expected);
}

// keep_best and early stopping need validations during training; the message points at the
// line that asked for them.
TEST(Config, KeepBestAndEarlyStoppingNeedEvalEvery) {
  EXPECT_THAT(error_of("[checkpoint]\nkeep_best = true\n"),
              HasSubstr("run.toml:2: 'checkpoint.keep_best' = true needs validations during "
                        "training: set 'train.eval_every' > 0"));
  EXPECT_THAT(error_of("[train]\nearly_stopping_patience = 2\n"),
              HasSubstr("run.toml:2: 'train.early_stopping_patience' = 2 needs validations"));
  EXPECT_THAT(error_of("[train]\nearly_stopping_min_delta = -1\n"),
              HasSubstr("'train.early_stopping_min_delta' = -1.0 is out of range [0, 1000000000]"));
  // A delta counts only towards a patience: without one (0 = never stop) it is a mistake.
  EXPECT_THAT(error_of("[train]\neval_every = 5\nearly_stopping_min_delta = 0.5\n"),
              HasSubstr("run.toml:3: 'train.early_stopping_min_delta' = 0.5 has no effect without "
                        "early stopping: set 'train.early_stopping_patience' > 0"));
  EXPECT_THAT(error_of("[train]\neval_every = 5\nearly_stopping_patience = 0\n"
                       "early_stopping_min_delta = 2\n"),
              HasSubstr("'train.early_stopping_min_delta' = 2"));
  EXPECT_NO_THROW(config_from_string("[train]\neval_every = 5\nearly_stopping_patience = 0\n"));
  const Config ok = config_from_string(
      "[train]\neval_every = 5\nearly_stopping_patience = 2\nearly_stopping_min_delta = 0.5\n"
      "[checkpoint]\nkeep_best = true\n");
  EXPECT_TRUE(ok.checkpoint.keep_best);
  EXPECT_EQ(ok.train.early_stopping_patience, 2);
  EXPECT_EQ(ok.train.early_stopping_min_delta, 0.5);
}

}  // namespace
}  // namespace elmo
