#include "hangar/base/tempdir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <system_error>

#include <fmt/format.h>

#include "hangar/base/mount.h"

namespace hangar {

TempDir::~TempDir() {
  if (!path_.empty()) (void)RemoveTree(path_);
}

TempDir& TempDir::operator=(TempDir&& o) noexcept {
  if (this != &o) {
    if (!path_.empty()) (void)RemoveTree(path_);
    path_ = std::move(o.path_);
    o.path_.clear();
  }
  return *this;
}

Result<TempDir> TempDir::Make(std::string_view prefix, std::string parent) {
  if (parent.empty()) {
    const char* t = std::getenv("TMPDIR");
    parent = (t && *t) ? t : "/tmp";
  }
  const std::string pattern = fmt::format("{}/{}XXXXXX", parent, prefix);
  std::string tmpl = pattern;  // mkdtemp rewrites the Xs even when it fails
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return Status::FromErrno(errno, fmt::format("mkdtemp({})", pattern));
  }
  TempDir d;
  d.path_ = std::move(tmpl);
  return d;
}

std::string TempDir::Release() {
  std::string p = std::move(path_);
  path_.clear();
  return p;
}

Status RemoveTree(const std::string& path) {
  if (path.empty() || path == "/") return Status::InvalidArgument("refusing to remove '/'");
  auto mounts = MountsUnder(path);
  if (mounts.ok()) {
    for (const auto& m : *mounts) {
      ScopedMount owned(m);
      HANGAR_TRY(owned.Unmount());
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  if (ec) return Status::FromErrno(ec.value(), fmt::format("remove_all({})", path));
  return Status::Ok();
}

Status MakeDirs(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return Status::FromErrno(ec.value(), fmt::format("mkdir -p {}", path));
  return Status::Ok();
}

}  // namespace hangar
