// ScopedMount: owns one mount point; detaches it (umount2 MNT_DETACH) on destruction unless
// released. Use it for every mount a code path makes, so that an early return or an error
// leaves nothing mounted.
// Thread safety: a value; not shared.
#pragma once

#include <string>
#include <vector>

#include "hangar/base/status.h"

namespace hangar {

class ScopedMount {
 public:
  ScopedMount() = default;
  explicit ScopedMount(std::string target) : target_(std::move(target)) {}
  ~ScopedMount() { (void)Unmount(); }
  ScopedMount(ScopedMount&& o) noexcept : target_(o.Release()) {}
  ScopedMount& operator=(ScopedMount&& o) noexcept;
  ScopedMount(const ScopedMount&) = delete;
  ScopedMount& operator=(const ScopedMount&) = delete;

  // mount(2); on success the returned object owns `target`.
  static Result<ScopedMount> Mount(const std::string& source, const std::string& target,
                                   const std::string& fstype, unsigned long flags,
                                   const std::string& data = "");

  const std::string& target() const { return target_; }
  bool active() const { return !target_.empty(); }
  // Unmounts now (lazy detach); idempotent.
  Status Unmount();
  // Gives up ownership: the mount stays.
  std::string Release();

 private:
  std::string target_;
};

// Mount points (from /proc/self/mountinfo) at or below `prefix`, deepest first — the order in
// which they can be unmounted.
Result<std::vector<std::string>> MountsUnder(const std::string& prefix);

}  // namespace hangar
