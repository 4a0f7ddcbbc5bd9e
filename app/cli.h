// The elmo_fast command line: subcommands train (default), vocab, prepare, eval, import-bilm,
// export-bilm, embed. Returns the process exit code (0 ok, 1 runtime error, 2 usage error).
#pragma once

namespace elmo {
int run_cli(int argc, char** argv);
}
