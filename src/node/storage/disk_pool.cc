#include "hangar/storage/disk_pool.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include <fmt/format.h>

#include "hangar/base/log.h"
#include "hangar/base/random.h"
#include "hangar/base/tempdir.h"
#include "hangar/storage/recovery.h"
#include "storage_util.h"

namespace hangar::storage {

Result<std::unique_ptr<DiskPool>> DiskPool::Create(DiskPoolOptions options) {
  if (options.data_dir.empty()) return Status::InvalidArgument("disk pool data_dir is empty");
  for (const auto& [size, count] : options.targets) {
    if (size == 0) return Status::InvalidArgument("disk pool target for size 0 MiB");
  }
  if (options.premount && !options.attach) {
    return Status::InvalidArgument("disk pool: premount needs attach");
  }
  HANGAR_TRY(MakeDirs(DisksDir(options.data_dir)));
  return std::unique_ptr<DiskPool>(new DiskPool(std::move(options)));
}

DiskPool::~DiskPool() {
  Stop();
  std::map<uint64_t, std::deque<Disk>> drained;
  {
    std::lock_guard<std::mutex> lock(mu_);
    drained.swap(ready_);
  }
  // Each disk: unmount, detach, delete image; then its staging mount point.
  for (auto& [size, disks] : drained) {
    for (Disk& d : disks) {
      std::string staging = d.mounted() ? d.mount_point() : "";
      (void)d.Destroy();
      if (!staging.empty()) ::rmdir(staging.c_str());
    }
  }
}

std::string DiskPool::disks_dir() const { return DisksDir(options_.data_dir); }

Result<Disk> DiskPool::MakeDisk(uint64_t size_mb) const {
  const std::string image =
      internal::JoinPath(disks_dir(), fmt::format("{}m-{}.img", size_mb, RandomHex(8)));
  HANGAR_ASSIGN_OR_RETURN(Disk disk, Disk::Create(image, size_mb, options_.format));
  if (options_.attach) HANGAR_TRY(disk.Attach(options_.loop));
  if (options_.premount) {
    const std::string staging = image + ".mnt";
    if (::mkdir(staging.c_str(), 0700) != 0 && errno != EEXIST) {
      return Status::FromErrno(errno, fmt::format("mkdir({})", staging));
    }
    Status st = disk.Mount(staging);
    for (const std::string& d : options_.layer_dirs) {
      if (!st.ok()) break;
      const std::string path = internal::JoinPath(staging, d);
      if (::mkdir(path.c_str(), 0755) != 0)
        st = Status::FromErrno(errno, fmt::format("mkdir({})", path));
    }
    if (st.ok()) {
      // Host root's lost+found would be an unusable nobody-owned directory inside.
      ::rmdir(internal::JoinPath(staging, "lost+found").c_str());
    } else {
      (void)disk.Destroy();
      ::rmdir(staging.c_str());
      return st;
    }
  }
  return disk;
}

Result<Disk> DiskPool::Take(uint64_t size_mb) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!pending_since_) pending_since_ = std::chrono::steady_clock::now();
    auto it = ready_.find(size_mb);
    if (it != ready_.end() && !it->second.empty()) {
      Disk d = std::move(it->second.front());
      it->second.pop_front();
      ++stats_.hits;
      cv_.notify_all();  // wake the refiller
      return d;
    }
    ++stats_.misses;
    cv_.notify_all();
  }
  // Cold path, outside the lock so other Takes are not held up by mkfs.
  return MakeDisk(size_mb);
}

uint64_t DiskPool::NeediestSizeLocked() const {
  uint64_t best = 0;
  size_t best_deficit = 0;
  for (const auto& [size, target] : options_.targets) {
    size_t have = 0;
    if (auto it = ready_.find(size); it != ready_.end()) have += it->second.size();
    if (auto it = in_flight_.find(size); it != in_flight_.end()) have += it->second;
    if (have < target && target - have > best_deficit) {
      best = size;
      best_deficit = target - have;
    }
  }
  return best;
}

Result<size_t> DiskPool::Refill() {
  size_t created = 0;
  for (;;) {
    uint64_t size;
    {
      std::lock_guard<std::mutex> lock(mu_);
      size = NeediestSizeLocked();
      if (size == 0) return created;
      ++in_flight_[size];
    }
    auto disk = MakeDisk(size);
    std::lock_guard<std::mutex> lock(mu_);
    --in_flight_[size];
    if (!disk.ok()) {
      ++stats_.failures;
      return disk.status().With(fmt::format("refilling disk pool ({} MiB)", size));
    }
    ready_[size].push_back(std::move(*disk));
    ++stats_.created;
    ++created;
  }
}

void DiskPool::StartBackgroundRefill() {
  std::lock_guard<std::mutex> lock(mu_);
  if (refiller_.joinable()) return;
  stop_ = false;
  refiller_ = std::thread([this] { RefillLoop(); });
}

void DiskPool::RefillLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    if (NeediestSizeLocked() == 0) {
      pending_since_.reset();
      cv_.wait(lock, [this] { return stop_ || NeediestSizeLocked() != 0; });
      continue;
    }
    // Leave the CPU to whoever just took a disk (options_.refill_delay), counted from the first
    // Take since the pool was full so a stream of Takes cannot postpone the refill for ever.
    if (pending_since_ &&
        std::chrono::steady_clock::now() < *pending_since_ + options_.refill_delay) {
      const auto quiet_until = *pending_since_ + options_.refill_delay;
      cv_.wait_until(lock, quiet_until, [this] { return stop_; });
      continue;
    }
    lock.unlock();
    auto r = Refill();
    lock.lock();
    if (!r.ok()) {
      log::Warn("disk pool refill failed; retrying in 1 s", {{"error", r.status().ToString()}});
      cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stop_; });
    }
  }
}

void DiskPool::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  if (refiller_.joinable()) refiller_.join();
}

size_t DiskPool::Ready(uint64_t size_mb) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = ready_.find(size_mb);
  return it == ready_.end() ? 0 : it->second.size();
}

DiskPoolStats DiskPool::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace hangar::storage
