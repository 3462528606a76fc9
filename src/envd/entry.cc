#include "entry.h"

#include <fcntl.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "protocol.h"

namespace hangar::envd::internal {

std::string PermissionsString(mode_t mode) {
  // Go's letters, in Go's order: ModeDir d, ModeSymlink L, ModeDevice D, ModeNamedPipe p,
  // ModeSocket S, ModeSetuid u, ModeSetgid g, ModeCharDevice c, ModeSticky t.
  std::string out;
  switch (mode & S_IFMT) {
    case S_IFDIR:
      out += 'd';
      break;
    case S_IFLNK:
      out += 'L';
      break;
    case S_IFBLK:
      out += 'D';
      break;
    case S_IFIFO:
      out += 'p';
      break;
    case S_IFSOCK:
      out += 'S';
      break;
    case S_IFCHR:
      out += 'D';
      break;
    default:
      break;
  }
  if (mode & S_ISUID) out += 'u';
  if (mode & S_ISGID) out += 'g';
  if ((mode & S_IFMT) == S_IFCHR) out += 'c';
  if (mode & S_ISVTX) out += 't';
  if (out.empty()) out += '-';
  static constexpr char kRwx[] = "rwxrwxrwx";
  for (int i = 0; i < 9; ++i) out += (mode & (1u << (8 - i))) ? kRwx[i] : '-';
  return out;
}

namespace {

const char* TypeName(mode_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG:
      return "FILE_TYPE_FILE";
    case S_IFDIR:
      return "FILE_TYPE_DIRECTORY";
    default:
      return nullptr;  // unspecified: omitted, as proto3 JSON does for a zero enum
  }
}

std::string BaseName(const std::string& path) {
  if (path == "/") return "/";
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

Result<nlohmann::json> EntryJson(const Root& root, UserDb& users, const std::string& path) {
  HANGAR_ASSIGN_OR_RETURN(struct stat st, root.Lstat(path));
  nlohmann::json e = nlohmann::json::object();
  e["name"] = BaseName(path);
  mode_t type_mode = st.st_mode;
  if (S_ISLNK(st.st_mode)) {
    auto target = root.RealPath(path);
    auto target_st = target.ok() ? root.Stat(path) : Result<struct stat>(target.status());
    e["symlinkTarget"] = target.ok() ? *target : path;
    type_mode = target_st.ok() ? target_st->st_mode : 0;
  }
  if (const char* type = TypeName(type_mode)) e["type"] = type;
  e["path"] = path;
  e["size"] = std::to_string(st.st_size);
  e["mode"] = static_cast<uint32_t>(type_mode & 0777);
  e["permissions"] = PermissionsString(st.st_mode);
  e["owner"] = users.UserName(st.st_uid);
  e["group"] = users.GroupName(st.st_gid);
  e["modifiedTime"] = FormatTimestamp(static_cast<int64_t>(st.st_mtim.tv_sec),
                                      static_cast<int32_t>(st.st_mtim.tv_nsec));
  if (!S_ISLNK(st.st_mode)) {
    if (auto fd = root.OpenAt(path, O_PATH | O_NOFOLLOW); fd.ok()) {
      Metadata md = ReadMetadata(fd->get());
      if (!md.empty()) e["metadata"] = md;
    }
  }
  return e;
}

Metadata ReadMetadata(int fd) {
  Metadata out;
  // Through the descriptor's /proc link: the f*xattr calls refuse O_PATH descriptors.
  std::string link = "/proc/self/fd/" + std::to_string(fd);
  std::vector<char> names(1024);
  ssize_t n;
  for (;;) {
    n = ::listxattr(link.c_str(), names.data(), names.size());
    if (n >= 0) break;
    if (errno != ERANGE || names.size() > (1 << 20)) return out;
    names.resize(names.size() * 4);
  }
  for (size_t i = 0; i < static_cast<size_t>(n);) {
    std::string name(names.data() + i);
    i += name.size() + 1;
    if (name.compare(0, kMetadataXattrPrefix.size(), kMetadataXattrPrefix) != 0) continue;
    char value[4096];
    ssize_t vn = ::getxattr(link.c_str(), name.c_str(), value, sizeof value);
    if (vn < 0) continue;
    out[name.substr(kMetadataXattrPrefix.size())] = std::string(value, static_cast<size_t>(vn));
  }
  return out;
}

Status WriteMetadata(int fd, const Metadata& metadata) {
  for (const auto& [key, value] : metadata) {
    std::string name = std::string(kMetadataXattrPrefix) + key;
    if (::fsetxattr(fd, name.c_str(), value.data(), value.size(), 0) != 0) {
      return Status::FromErrno(errno, "fsetxattr(" + name + ")");
    }
  }
  return Status::Ok();
}

Status ValidateMetadata(const Metadata& metadata) {
  auto printable = [](std::string_view s) {
    for (char c : s) {
      if (c < 0x20 || c > 0x7e) return false;
    }
    return true;
  };
  size_t total = 0;
  for (const auto& [key, value] : metadata) {
    if (key.empty() || !printable(key)) {
      return Status::InvalidArgument("metadata key '" + key + "' must be printable US-ASCII");
    }
    if (!printable(value)) {
      return Status::InvalidArgument("metadata value of '" + key + "' must be printable US-ASCII");
    }
    if (key.size() > 255 - kMetadataXattrPrefix.size()) {
      return Status::InvalidArgument("metadata key '" + key + "' is longer than 246 bytes");
    }
    total += kMetadataXattrPrefix.size() + key.size() + value.size();
  }
  if (total > 4096) {
    return Status::InvalidArgument("metadata totals " + std::to_string(total) +
                                   " bytes; the limit is 4096");
  }
  return Status::Ok();
}

}  // namespace hangar::envd::internal
