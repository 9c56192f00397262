// Whole-file reads for inputs the user names (IR text, .npy arrays).
#pragma once

#include <string>

namespace mlafuse {

// The bytes of the regular file `path`. A missing file, a directory or a read error is an
// mlafuse::Error naming the path (never an iostream exception).
std::string read_file(const std::string& path);

}  // namespace mlafuse
