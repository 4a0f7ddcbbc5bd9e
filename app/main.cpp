// elmo_fast entry point: maps errors to exit codes (2 usage/config, 1 runtime).
#include "app/cli.h"

int main(int argc, char** argv) { return elmo::run_cli(argc, argv); }
