#include "hangar/storage/tarball.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <vector>

#include <fmt/format.h>

#include "hangar/base/fd.h"
#include "storage_util.h"

namespace hangar::storage {
namespace {

constexpr size_t kMaxPathBytes = 4095;

using ArchivePtr = std::unique_ptr<struct archive, int (*)(struct archive*)>;

// Feeds libarchive from an fd we opened once, hashing every byte on the way, so the digest and
// the entries come from the same bytes.
struct HashingReader {
  int fd = -1;
  internal::Sha256 sha;
  std::vector<char> buf = std::vector<char>(1 << 16);
  int err = 0;

  static la_ssize_t Read(struct archive*, void* self, const void** out) {
    auto* r = static_cast<HashingReader*>(self);
    for (;;) {
      ssize_t n = ::read(r->fd, r->buf.data(), r->buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        r->err = errno;
        return -1;
      }
      r->sha.Update(r->buf.data(), static_cast<size_t>(n));
      *out = r->buf.data();
      return n;
    }
  }
  // libarchive stops at the end-of-archive marker; the digest covers the whole file.
  Status Drain(const std::string& path) {
    for (;;) {
      ssize_t n = ::read(fd, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Status::FromErrno(errno, fmt::format("read({})", path));
      if (n == 0) return Status::Ok();
      sha.Update(buf.data(), static_cast<size_t>(n));
    }
  }
};

Result<ArchivePtr> OpenReader(const std::string& path, HashingReader& reader) {
  ArchivePtr a(archive_read_new(), archive_read_free);
  if (!a) return Status::Internal("archive_read_new() failed");
  // Tar only (ustar, pax, gnutar, v7). The compression filters are the in-process ones of
  // Debian's libarchive; none of them runs an external program.
  archive_read_support_format_tar(a.get());
  archive_read_support_format_gnutar(a.get());
  archive_read_support_filter_gzip(a.get());
  archive_read_support_filter_xz(a.get());
  archive_read_support_filter_zstd(a.get());
  archive_read_support_filter_bzip2(a.get());
  if (::lseek(reader.fd, 0, SEEK_SET) != 0) {
    return Status::FromErrno(errno, fmt::format("lseek({}, 0)", path));
  }
  if (archive_read_open(a.get(), &reader, nullptr, &HashingReader::Read, nullptr) != ARCHIVE_OK) {
    return Status::InvalidArgument(
        fmt::format("{}: not a readable tar archive: {}", path, archive_error_string(a.get())));
  }
  return a;
}

struct NormalizedPath {
  std::string path;                // components joined by '/', without "." ("" = the root)
  std::vector<std::string> parts;  // its components
};

// Splits an entry name into components. Rejects what could leave the extraction root.
Status Normalize(std::string_view raw, std::string_view what, NormalizedPath& out) {
  if (raw.empty()) return Status::InvalidArgument(fmt::format("{} has an empty name", what));
  if (raw.size() > kMaxPathBytes) {
    return Status::InvalidArgument(
        fmt::format("{} '{}...' is longer than {} bytes", what, raw.substr(0, 64), kMaxPathBytes));
  }
  if (raw.front() == '/') {
    return Status::InvalidArgument(fmt::format("{} '{}' is an absolute path", what, raw));
  }
  out = {};
  int depth = 0;
  bool dotdot = false;
  size_t i = 0;
  while (i <= raw.size()) {
    size_t j = raw.find('/', i);
    if (j == std::string_view::npos) j = raw.size();
    std::string_view c = raw.substr(i, j - i);
    i = j + 1;
    if (c.empty() || c == ".") continue;
    if (c == "..") {
      dotdot = true;
      if (--depth < 0) {
        return Status::InvalidArgument(fmt::format("{} '{}' escapes the root", what, raw));
      }
      continue;
    }
    ++depth;
    out.parts.emplace_back(c);
  }
  // libarchive's SECURE_NODOTDOT refuses every '..', so refuse it here too, with a clear name.
  if (dotdot) {
    return Status::InvalidArgument(fmt::format("{} '{}' has a '..' component", what, raw));
  }
  for (const auto& p : out.parts) {
    if (!out.path.empty()) out.path.push_back('/');
    out.path += p;
  }
  return Status::Ok();
}

const char* TypeName(mode_t type) {
  switch (type) {
    case AE_IFCHR:
      return "a character device";
    case AE_IFBLK:
      return "a block device";
    case AE_IFSOCK:
      return "a socket";
    default:
      return "of an unsupported type";
  }
}

// The per-entry rules of tarball.h, with the state they need (earlier regular files for hard
// links, earlier symlinks for the below-a-symlink rule, the running totals).
class EntryChecker {
 public:
  explicit EntryChecker(const TarballLimits& limits) : limits_(limits) {}

  // On success `norm` (and `link_norm` for a hard link) hold the normalised names.
  Status Check(struct archive_entry* e, NormalizedPath& norm, NormalizedPath& link_norm) {
    ++summary_.entries;
    if (summary_.entries > limits_.max_entries) {
      return Status::ResourceExhausted(
          fmt::format("archive has more than {} entries", limits_.max_entries));
    }
    const char* raw = archive_entry_pathname(e);
    if (raw == nullptr) {
      return Status::InvalidArgument(
          fmt::format("entry #{} has a name that cannot be decoded", summary_.entries));
    }
    HANGAR_TRY(Normalize(raw, "entry", norm));
    HANGAR_TRY(CheckNotBelowSymlink(norm, raw, "entry"));
    const mode_t type = archive_entry_filetype(e);
    const char* hardlink = archive_entry_hardlink(e);
    if (norm.path.empty() && (hardlink != nullptr || type != AE_IFDIR)) {
      return Status::InvalidArgument(fmt::format("entry '{}' (the root) is not a directory", raw));
    }
    if (hardlink != nullptr) {
      std::string what = fmt::format("hard link '{}' ->", raw);
      if (hardlink[0] == '/') {
        return Status::InvalidArgument(
            fmt::format("hard link '{}' points to the absolute path '{}'", raw, hardlink));
      }
      HANGAR_TRY(Normalize(hardlink, what, link_norm));
      HANGAR_TRY(CheckNotBelowSymlink(link_norm, hardlink, what));
      if (!regular_.contains(link_norm.path)) {
        return Status::InvalidArgument(fmt::format(
            "hard link '{}' -> '{}' names no earlier regular file of the archive", raw, hardlink));
      }
      Record(norm.path, AE_IFREG);
      return Status::Ok();
    }
    switch (type) {
      case AE_IFREG: {
        const int64_t size = archive_entry_size(e);
        summary_.total_bytes += size > 0 ? static_cast<uint64_t>(size) : 0;
        if (summary_.total_bytes > limits_.max_total_bytes) {
          return Status::ResourceExhausted(
              fmt::format("archive expands to more than {} bytes (limit reached at entry '{}')",
                          limits_.max_total_bytes, raw));
        }
        if (archive_entry_perm(e) & (S_ISUID | S_ISGID)) ++summary_.setuid_files;
        break;
      }
      case AE_IFDIR:
      case AE_IFLNK:
      case AE_IFIFO:
        break;
      case AE_IFCHR:
      case AE_IFBLK:
        return Status::InvalidArgument(
            fmt::format("entry '{}' is {} ({}:{}); device nodes are not allowed in a template", raw,
                        TypeName(type), archive_entry_rdevmajor(e), archive_entry_rdevminor(e)));
      default:
        return Status::InvalidArgument(
            fmt::format("entry '{}' is {} (mode {:#o})", raw, TypeName(type), type));
    }
    Record(norm.path, type);
    return Status::Ok();
  }

  TarballSummary& summary() { return summary_; }

 private:
  Status CheckNotBelowSymlink(const NormalizedPath& n, std::string_view raw,
                              std::string_view what) const {
    std::string prefix;
    for (size_t i = 0; i + 1 < n.parts.size(); ++i) {
      if (!prefix.empty()) prefix.push_back('/');
      prefix += n.parts[i];
      if (symlinks_.contains(prefix)) {
        return Status::InvalidArgument(
            fmt::format("{} '{}' is below the symlink '{}'", what, raw, prefix));
      }
    }
    return Status::Ok();
  }

  // A later entry of the same name replaces the earlier one (tar semantics).
  void Record(const std::string& path, mode_t type) {
    regular_.erase(path);
    symlinks_.erase(path);
    if (type == AE_IFREG) regular_.insert(path);
    if (type == AE_IFLNK) symlinks_.insert(path);
  }

  const TarballLimits limits_;
  TarballSummary summary_;
  std::unordered_set<std::string> regular_;
  std::unordered_set<std::string> symlinks_;
};

Status ValidateFromFd(const std::string& path, HashingReader& reader, const TarballLimits& limits,
                      TarballSummary& out) {
  HANGAR_ASSIGN_OR_RETURN(ArchivePtr a, OpenReader(path, reader));
  EntryChecker checker(limits);
  struct archive_entry* e = nullptr;
  for (;;) {
    int r = archive_read_next_header(a.get(), &e);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) {
      if (reader.err != 0) return Status::FromErrno(reader.err, fmt::format("read({})", path));
      return Status::InvalidArgument(fmt::format("{}: corrupt archive after {} entries: {}", path,
                                                 checker.summary().entries,
                                                 archive_error_string(a.get())));
    }
    NormalizedPath norm, link_norm;
    HANGAR_TRY(checker.Check(e, norm, link_norm).With(path));
    if (archive_read_data_skip(a.get()) < ARCHIVE_WARN) {
      return Status::InvalidArgument(fmt::format("{}: truncated data of entry '{}': {}", path,
                                                 archive_entry_pathname(e),
                                                 archive_error_string(a.get())));
    }
  }
  if (checker.summary().entries == 0) {
    return Status::InvalidArgument(fmt::format("{}: archive has no entries", path));
  }
  HANGAR_TRY(reader.Drain(path));
  out = checker.summary();
  out.sha256 = "sha256:" + reader.sha.HexDigest();
  return Status::Ok();
}

// Runs in its own thread after unshare(CLONE_FS): chdir/chroot/umask here do not touch the
// rest of the process.
Status ExtractConfined(const std::string& path, const std::string& dest, HashingReader& reader,
                       const TarballLimits& limits, TarballSummary& out) {
  if (::unshare(CLONE_FS) != 0) return Status::FromErrno(errno, "unshare(CLONE_FS)");
  ::umask(0);
  const bool root = ::geteuid() == 0;
  // As root, chroot into the destination as well: even a libarchive bug cannot then write
  // outside it. Without root the SECURE_* flags below are the confinement.
  if (root) {
    if (::chroot(dest.c_str()) != 0)
      return Status::FromErrno(errno, fmt::format("chroot({})", dest));
    if (::chdir("/") != 0) return Status::FromErrno(errno, "chdir(/)");
  } else if (::chdir(dest.c_str()) != 0) {
    return Status::FromErrno(errno, fmt::format("chdir({})", dest));
  }
  HANGAR_ASSIGN_OR_RETURN(ArchivePtr in, OpenReader(path, reader));
  ArchivePtr disk(archive_write_disk_new(), archive_write_free);
  int flags = ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
              ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME;
  if (root) flags |= ARCHIVE_EXTRACT_OWNER;  // numeric ids: no lookup set on purpose
  archive_write_disk_set_options(disk.get(), flags);

  EntryChecker checker(limits);
  struct archive_entry* e = nullptr;
  for (;;) {
    int r = archive_read_next_header(in.get(), &e);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) {
      return Status::InvalidArgument(
          fmt::format("{}: corrupt archive: {}", path, archive_error_string(in.get())));
    }
    NormalizedPath norm, link_norm;
    // The second pass re-checks: the file may have changed since validation.
    HANGAR_TRY(checker.Check(e, norm, link_norm).With(path));
    const std::string name = norm.path.empty() ? "." : norm.path;
    archive_entry_set_pathname(e, name.c_str());
    if (archive_entry_hardlink(e) != nullptr) {
      archive_entry_set_hardlink(e, link_norm.path.c_str());
    }
    if (archive_write_header(disk.get(), e) < ARCHIVE_WARN) {
      return Status::Internal(fmt::format("{}: extracting entry '{}' into {}: {}", path, name, dest,
                                          archive_error_string(disk.get())));
    }
    if (archive_entry_size(e) > 0) {
      const void* buf;
      size_t size;
      la_int64_t offset;
      for (;;) {
        r = archive_read_data_block(in.get(), &buf, &size, &offset);
        if (r == ARCHIVE_EOF) break;
        if (r < ARCHIVE_WARN) {
          return Status::InvalidArgument(fmt::format("{}: reading entry '{}': {}", path, name,
                                                     archive_error_string(in.get())));
        }
        if (archive_write_data_block(disk.get(), buf, size, offset) < ARCHIVE_WARN) {
          return Status::Internal(fmt::format("{}: writing entry '{}' into {}: {}", path, name,
                                              dest, archive_error_string(disk.get())));
        }
      }
    }
    if (archive_write_finish_entry(disk.get()) < ARCHIVE_WARN) {
      return Status::Internal(fmt::format("{}: finishing entry '{}' in {}: {}", path, name, dest,
                                          archive_error_string(disk.get())));
    }
  }
  // Applies the deferred directory permissions and times.
  if (archive_write_close(disk.get()) < ARCHIVE_WARN) {
    return Status::Internal(fmt::format("{}: closing extraction into {}: {}", path, dest,
                                        archive_error_string(disk.get())));
  }
  HANGAR_TRY(reader.Drain(path));
  out = checker.summary();
  out.sha256 = "sha256:" + reader.sha.HexDigest();
  return Status::Ok();
}

}  // namespace

Result<TarballSummary> ValidateTarball(const std::string& path, const TarballLimits& limits) {
  HANGAR_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY));
  HashingReader reader;
  reader.fd = fd.get();
  TarballSummary summary;
  HANGAR_TRY(ValidateFromFd(path, reader, limits, summary));
  return summary;
}

Result<TarballSummary> ExtractTarball(const std::string& path, const std::string& dest,
                                      const TarballLimits& limits) {
  HANGAR_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY));
  TarballSummary validated;
  {
    HashingReader reader;
    reader.fd = fd.get();
    HANGAR_TRY(ValidateFromFd(path, reader, limits, validated));
  }
  HashingReader reader;
  reader.fd = fd.get();
  TarballSummary extracted;
  Status st;
  std::thread worker([&] { st = ExtractConfined(path, dest, reader, limits, extracted); });
  worker.join();
  HANGAR_TRY(st);
  if (extracted.sha256 != validated.sha256) {
    return Status::Aborted(fmt::format("{} changed while it was being imported", path));
  }
  return extracted;
}

}  // namespace hangar::storage
