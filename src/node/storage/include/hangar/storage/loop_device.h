// LoopDevice: sole owner of one attached loop device; detaches it on destruction.
//
// Attach() asks /dev/loop-control for a free device (LOOP_CTL_GET_FREE) and binds the backing
// file with one LOOP_CONFIGURE ioctl (Linux >= 5.8): direct I/O (the backing file's page cache
// is bypassed, so a sandbox's writes are not cached twice and reach the device-level throttle
// as they happen), autoclear and the block size in one step. Kernels without LOOP_CONFIGURE
// get LOOP_SET_FD + LOOP_SET_STATUS64 + LOOP_SET_DIRECT_IO. A device another process grabs
// between GET_FREE and the bind (EBUSY) is skipped and the next one tried.
//
// Autoclear means: once nothing holds the device open (no fd, no mount) the kernel detaches
// it. A daemon that dies before mounting therefore leaks no loop device; a mounted one stays
// until unmounted (RecoverDisks handles those). Detach() while a mount still holds the device
// defers the detach to the unmount (the kernel's rule for busy devices).
// Thread safety: a value; not shared.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "hangar/base/fd.h"
#include "hangar/base/status.h"

namespace hangar::storage {

struct LoopOptions {
  bool direct_io = true;
  bool autoclear = true;
  bool read_only = false;
  uint32_t block_size = 4096;  // logical block size; matches ext4's 4 KiB blocks
  bool force_legacy = false;   // use LOOP_SET_FD even if LOOP_CONFIGURE exists (tests, bench)
};

class LoopDevice {
 public:
  LoopDevice() = default;
  ~LoopDevice() { (void)Detach(); }
  LoopDevice(LoopDevice&& o) noexcept;
  LoopDevice& operator=(LoopDevice&& o) noexcept;
  LoopDevice(const LoopDevice&) = delete;
  LoopDevice& operator=(const LoopDevice&) = delete;

  static Result<LoopDevice> Attach(const std::string& backing_file,
                                   const LoopOptions& options = {});
  // Takes ownership of an already attached device (e.g. after a daemon restart).
  static Result<LoopDevice> Open(const std::string& device);

  bool attached() const { return fd_.valid(); }
  const std::string& path() const { return path_; }  // /dev/loopN
  int index() const { return index_; }
  dev_t dev() const { return dev_; }  // major:minor — what blkio/io.max throttles target
  bool used_configure() const { return used_configure_; }
  // As the kernel reports it now (/sys/block/loopN/loop/dio).
  bool DirectIoActive() const;

  // LOOP_CLR_FD and close. Idempotent.
  Status Detach();
  // Closes the fd without LOOP_CLR_FD: with autoclear the kernel detaches when the last user
  // goes, as if this process had died. Used to simulate a crash.
  void Release();

 private:
  UniqueFd fd_;
  std::string path_;
  int index_ = -1;
  dev_t dev_ = 0;
  bool used_configure_ = false;
};

// One attached loop device as sysfs shows it.
struct LoopStatus {
  int index = -1;
  std::string device;  // /dev/loopN
  dev_t dev = 0;
  std::string backing_file;  // without the " (deleted)" suffix
  bool backing_deleted = false;
  bool autoclear = false;
  bool direct_io = false;
};

// Every attached loop device (/sys/block/loop*/loop/backing_file exists only while bound).
Result<std::vector<LoopStatus>> ListAttachedLoops();
// The attached loops whose backing file is at or below `dir`.
Result<std::vector<LoopStatus>> ListAttachedLoopsUnder(const std::string& dir);

}  // namespace hangar::storage
