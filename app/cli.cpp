#include "app/cli.h"

#include <CLI/CLI.hpp>

#include <cstdio>

#include "runtime/error.h"
#include "runtime/log.h"

namespace elmo {

int run_cli(int argc, char** argv) {
  CLI::App app{"elmo_fast: train ELMo-style bidirectional LSTM language models"};
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  return 0;
}

}  // namespace elmo
