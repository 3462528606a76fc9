// Rootfs tarballs (e.g. `docker export` output, optionally gzip/xz/zstd/bzip2-compressed):
// validation of every entry before anything is extracted, then a confined extraction.
//
// Contract: ValidateTarball reads only headers and writes nothing. ExtractTarball validates the
// whole archive first, then extracts; the same per-entry rules are checked again while
// extracting, so an archive that changes between the passes cannot slip an entry through.
// Rules (the first violation is reported by entry name and nothing is extracted):
//  - only tar formats; no absolute paths; no '..' components ("entry 'etc/../../x' escapes the
//    root"); names at most 4095 bytes;
//  - types: regular, directory, symlink, hard link, fifo. Char/block devices and sockets are
//    refused — a template never carries device nodes, the runtime provides /dev;
//  - hard links must name an earlier regular file of the same archive by a relative path;
//  - no entry may sit below an earlier symlink entry (writing through a symlink is the classic
//    escape; libarchive's SECURE_SYMLINKS also refuses it at extraction);
//  - the sum of regular-file sizes and the entry count are capped (TarballLimits).
// Kept, by design: setuid/setgid bits (su, passwd need them; they are counted in the summary
// and inert on host because the template store is 0700 and sandbox disks are nosuid), absolute
// symlink *targets* (normal in a rootfs; they resolve inside the sandbox's root). Not extracted:
// xattrs (trusted.overlay.* would steer overlayfs), ACLs, file flags (immutable would block
// removal).
// Thread safety: stateless; extraction runs in a helper thread with its own cwd/root
// (unshare(CLONE_FS)), so it never changes the calling process's working directory.
#pragma once

#include <cstdint>
#include <string>

#include "hangar/base/status.h"

namespace hangar::storage {

struct TarballLimits {
  uint64_t max_total_bytes = uint64_t{16} << 30;  // sum of regular-file sizes
  uint64_t max_entries = 2'000'000;
};

struct TarballSummary {
  uint64_t entries = 0;
  uint64_t total_bytes = 0;  // sum of regular-file sizes (hard links not counted twice)
  uint64_t setuid_files = 0;
  std::string sha256;  // "sha256:<hex>" of the archive file as stored (compressed bytes)
};

// Checks every entry header against the rules above. Errors: invalid_argument naming the first
// bad entry; resource_exhausted for a limit; not_found / internal for I/O.
Result<TarballSummary> ValidateTarball(const std::string& path, const TarballLimits& limits = {});

// ValidateTarball, then extracts into `dest`, an existing empty directory the caller owns and
// deletes on failure. Ownership is restored when running as root (the extraction is also
// chroot-confined to `dest` then).
Result<TarballSummary> ExtractTarball(const std::string& path, const std::string& dest,
                                      const TarballLimits& limits = {});

}  // namespace hangar::storage
