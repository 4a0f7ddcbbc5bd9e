// Crash-safe file writing: write to "<path>.tmp-<pid>", fsync, rename over <path>, fsync the
// folder. A reader sees either the old file or the complete new one, never a torn write.
#pragma once

#include <string>
#include <string_view>

namespace elmo {

void write_file_atomic(const std::string& path, std::string_view bytes);
void fsync_directory(const std::string& dir);
std::string read_file(const std::string& path);  // whole file; Error naming the path on failure

}  // namespace elmo
