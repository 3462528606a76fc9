#include "file_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <memory>
#include <string>

namespace hangar::node {

Status WriteFileReplace(const std::string& path, std::string_view data, unsigned mode) {
  std::string tmp = path + ".tmp";
  {
    HANGAR_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(tmp, O_WRONLY | O_CREAT | O_TRUNC, mode));
    HANGAR_TRY(WriteAll(fd.get(), data).With(tmp));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return Status::FromErrno(err, "rename(" + tmp + ", " + path + ")");
  }
  return Status::Ok();
}

Status WriteExistingFile(const std::string& path, std::string_view data) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) return Status::FromErrno(errno, "open(" + path + ", O_WRONLY)");
  ssize_t n;
  do {
    n = ::write(fd.get(), data.data(), data.size());
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    return Status::FromErrno(errno, "write(" + path + ", \"" + std::string(data) + "\")");
  }
  if (static_cast<size_t>(n) != data.size()) {
    return Status::Internal("write(" + path + "): short write of " + std::to_string(n) + "/" +
                            std::to_string(data.size()) + " bytes");
  }
  return Status::Ok();
}

Result<std::vector<std::string>> ListSubdirectories(const std::string& path) {
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(path.c_str()), &::closedir);
  if (!dir) return Status::FromErrno(errno, "opendir(" + path + ")");
  std::vector<std::string> names;
  errno = 0;
  while (dirent* e = ::readdir(dir.get())) {
    std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    if (e->d_type == DT_DIR) names.emplace_back(name);
  }
  if (errno != 0) return Status::FromErrno(errno, "readdir(" + path + ")");
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<std::string_view> SplitLines(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    if (!line.empty()) lines.push_back(line);
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  return lines;
}

Result<uint64_t> ParseUint64(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\n' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\n' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) {
    return Status::InvalidArgument("not an unsigned integer: \"" + std::string(s) + "\"");
  }
  return v;
}

}  // namespace hangar::node
