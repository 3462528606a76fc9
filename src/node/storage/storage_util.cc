#include "storage_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <openssl/evp.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <deque>
#include <set>
#include <sstream>
#include <utility>

#include <fmt/format.h>

namespace hangar::storage::internal {

struct Sha256::Impl {
  EVP_MD_CTX* ctx = nullptr;
};

Sha256::Sha256() : impl_(std::make_unique<Impl>()) {
  impl_->ctx = EVP_MD_CTX_new();
  // Allocation failure of a ~200 byte context is not a condition we can handle meaningfully.
  assert(impl_->ctx != nullptr);
  EVP_DigestInit_ex(impl_->ctx, EVP_sha256(), nullptr);
}

Sha256::~Sha256() { EVP_MD_CTX_free(impl_->ctx); }

void Sha256::Update(const void* data, size_t n) { EVP_DigestUpdate(impl_->ctx, data, n); }

std::string Sha256::HexDigest() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(impl_->ctx, md, &len);
  std::string hex;
  hex.reserve(len * 2);
  for (unsigned i = 0; i < len; ++i) hex += fmt::format("{:02x}", md[i]);
  return hex;
}

Result<std::string> Sha256File(const std::string& path) {
  HANGAR_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY));
  Sha256 h;
  std::string buf(1 << 16, '\0');
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, fmt::format("read({})", path));
    }
    if (n == 0) break;
    h.Update(buf.data(), static_cast<size_t>(n));
  }
  return h.HexDigest();
}

namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string UnescapeMountinfo(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = (s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0');
      out.push_back(static_cast<char>(v));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

}  // namespace

Result<std::vector<std::string>> MountPointsOfDevice(dev_t dev) {
  HANGAR_ASSIGN_OR_RETURN(std::string info, ReadFile("/proc/self/mountinfo"));
  const std::string want = fmt::format("{}:{}", major(dev), minor(dev));
  std::vector<std::string> out;
  std::istringstream in(info);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, mount_point;
    fields >> id >> parent >> devno >> root >> mount_point;
    if (devno == want) out.push_back(UnescapeMountinfo(mount_point));
  }
  // Deepest first, later mounts first: the order in which they can be unmounted.
  std::reverse(out.begin(), out.end());
  std::stable_sort(out.begin(), out.end(), [](const std::string& a, const std::string& b) {
    return std::count(a.begin(), a.end(), '/') > std::count(b.begin(), b.end(), '/');
  });
  return out;
}

Result<std::vector<std::string>> MountinfoLinesMentioning(std::string_view needle) {
  HANGAR_ASSIGN_OR_RETURN(std::string info, ReadFile("/proc/self/mountinfo"));
  std::vector<std::string> out;
  std::istringstream in(info);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(needle) != std::string::npos) out.push_back(line);
  }
  return out;
}

Result<UniqueFd> OpenInRoot(int root_fd, const std::string& path, int flags) {
  struct open_how how = {};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
  long fd = ::syscall(SYS_openat2, root_fd, path.c_str(), &how, sizeof(how));
  if (fd < 0) {
    return Status::FromErrno(errno, fmt::format("openat2({}, RESOLVE_IN_ROOT)", path));
  }
  return UniqueFd(static_cast<int>(fd));
}

Result<std::string> ReadTrimmed(const std::string& path) {
  HANGAR_ASSIGN_OR_RETURN(std::string s, ReadFile(path));
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\t')) s.pop_back();
  return s;
}

std::string CanonicalOrSame(const std::string& path) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf) == nullptr) return path;
  return buf;
}

std::string JoinPath(std::string_view a, std::string_view b) {
  std::string out(a);
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  while (!b.empty() && b.front() == '/') b.remove_prefix(1);
  if (out.empty() || out.back() != '/') out.push_back('/');
  out.append(b);
  return out;
}

Result<TreeStats> InspectTree(const std::string& root) {
  HANGAR_ASSIGN_OR_RETURN(UniqueFd root_fd, OpenFile(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
  TreeStats stats;
  std::set<std::pair<dev_t, ino_t>> seen_inodes;
  // Breadth-first with one directory fd open at a time: a deep tree cannot run the process out
  // of file descriptors or stack.
  std::deque<std::string> dirs{""};
  while (!dirs.empty()) {
    std::string rel = std::move(dirs.front());
    dirs.pop_front();
    int dfd;
    if (rel.empty()) {
      dfd = ::dup(root_fd.get());
    } else {
      struct open_how how = {};
      how.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
      how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV;
      dfd = static_cast<int>(::syscall(SYS_openat2, root_fd.get(), rel.c_str(), &how, sizeof(how)));
    }
    if (dfd < 0) return Status::FromErrno(errno, fmt::format("openat2({}/{})", root, rel));
    DIR* d = ::fdopendir(dfd);
    if (d == nullptr) {
      int err = errno;
      ::close(dfd);
      return Status::FromErrno(err, fmt::format("fdopendir({}/{})", root, rel));
    }
    std::unique_ptr<DIR, int (*)(DIR*)> closer(d, ::closedir);
    while (struct dirent* e = ::readdir(d)) {
      std::string_view n = e->d_name;
      if (n == "." || n == "..") continue;
      struct stat st;
      if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        return Status::FromErrno(errno, fmt::format("fstatat({}/{}/{})", root, rel, n));
      }
      std::string child = rel.empty() ? std::string(n) : rel + "/" + std::string(n);
      ++stats.entries;
      if (S_ISDIR(st.st_mode)) {
        dirs.push_back(std::move(child));
      } else if (S_ISREG(st.st_mode)) {
        if (st.st_nlink <= 1 || seen_inodes.insert({st.st_dev, st.st_ino}).second) {
          stats.bytes += static_cast<uint64_t>(st.st_size);
        }
        if (st.st_mode & (S_ISUID | S_ISGID)) ++stats.setuid_files;
      } else if (S_ISLNK(st.st_mode)) {
        stats.bytes += static_cast<uint64_t>(st.st_size);
      } else if ((S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) || S_ISSOCK(st.st_mode)) &&
                 stats.first_device.empty()) {
        stats.first_device = child;
      }
    }
  }
  return stats;
}

}  // namespace hangar::storage::internal
