#include "hangar/base/mount.h"

#include <sys/mount.h>

#include <algorithm>
#include <cerrno>
#include <sstream>

#include <fmt/format.h>

#include "hangar/base/fd.h"

namespace hangar {

ScopedMount& ScopedMount::operator=(ScopedMount&& o) noexcept {
  if (this != &o) {
    (void)Unmount();
    target_ = o.Release();
  }
  return *this;
}

Result<ScopedMount> ScopedMount::Mount(const std::string& source, const std::string& target,
                                       const std::string& fstype, unsigned long flags,
                                       const std::string& data) {
  if (::mount(source.c_str(), target.c_str(), fstype.empty() ? nullptr : fstype.c_str(), flags,
              data.empty() ? nullptr : data.c_str()) != 0) {
    return Status::FromErrno(
        errno, fmt::format("mount({}, {}, {}, {:#x}, {})", source, target, fstype, flags, data));
  }
  return ScopedMount(target);
}

Status ScopedMount::Unmount() {
  if (target_.empty()) return Status::Ok();
  std::string t = std::move(target_);
  target_.clear();
  if (::umount2(t.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
    return Status::FromErrno(errno, fmt::format("umount2({}, MNT_DETACH)", t));
  }
  return Status::Ok();
}

std::string ScopedMount::Release() {
  std::string t = std::move(target_);
  target_.clear();
  return t;
}

namespace {
// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(const std::string& s) {
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

Result<std::vector<std::string>> MountsUnder(const std::string& prefix) {
  HANGAR_ASSIGN_OR_RETURN(std::string info, ReadFile("/proc/self/mountinfo"));
  std::vector<std::string> out;
  std::istringstream in(info);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, mount_point;
    fields >> id >> parent >> devno >> root >> mount_point;
    mount_point = Unescape(mount_point);
    if (mount_point == prefix ||
        (mount_point.size() > prefix.size() && mount_point.compare(0, prefix.size(), prefix) == 0 &&
         (prefix.back() == '/' || mount_point[prefix.size()] == '/'))) {
      out.push_back(mount_point);
    }
  }
  // Deepest first; mountinfo lists in mount order, so reverse keeps stacked mounts right.
  std::reverse(out.begin(), out.end());
  std::stable_sort(out.begin(), out.end(), [](const std::string& a, const std::string& b) {
    return std::count(a.begin(), a.end(), '/') > std::count(b.begin(), b.end(), '/');
  });
  return out;
}

}  // namespace hangar
