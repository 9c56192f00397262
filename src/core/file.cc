#include "mlafuse/core/file.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "mlafuse/core/error.h"

namespace mlafuse {

std::string read_file(const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  MLAFUSE_CHECK(!ec && std::filesystem::exists(status), path, ": cannot open for reading (",
                ec ? ec.message() : "no such file", ")");
  MLAFUSE_CHECK(!std::filesystem::is_directory(status), path,
                ": cannot read: it is a directory, not a file");
  // stdio rather than iostreams: read errors come back as a return value, not as an exception
  // from deep inside basic_filebuf.
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  MLAFUSE_CHECK(f != nullptr, path, ": cannot open for reading (", std::strerror(errno), ")");
  std::string data;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f.get())) > 0) data.append(buf, n);
  MLAFUSE_CHECK(!std::ferror(f.get()), path, ": read error");
  return data;
}

}  // namespace mlafuse
