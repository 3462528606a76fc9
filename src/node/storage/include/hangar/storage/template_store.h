// TemplateStore: read-only root filesystems that sandboxes start from.
//
// Layout under the store's root (created 0700: a template may hold setuid-root binaries from
// an untrusted image, so no unprivileged host user may reach them):
//   <root>/<name>/rootfs/         the root filesystem (never written after it appears)
//   <root>/<name>/template.json   metadata (TemplateInfo)
//   <root>/.staging/<name>.XXXXXX builds and imports in progress
//   <root>/.locks/<name>.lock     flock(2) that serialises work on one name across processes
// Every build or import happens in .staging, is synced (syncfs), and then appears with one
// rename(2): a template directory that exists is complete. An interrupted build leaves only a
// staging directory, which the next Open removes (unless another process still holds its
// lock). A failed call creates nothing.
//
// Read-only is a contract, not an enforcement: consumers use rootfs/ as an overlay lowerdir or
// read-only bind mount and never write to it.
//
// Template names match ^[a-z0-9][a-z0-9._-]{0,62}$ (invalid_argument otherwise).
// Thread safety: all methods may be called from any thread and from several processes on the
// same root; work on one name is serialised by its lock file.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "hangar/base/clock.h"
#include "hangar/base/status.h"
#include "hangar/storage/tarball.h"

namespace hangar::storage {

struct TemplateInfo {
  std::string name;
  // What it was made from: "debian:bookworm variant=apt packages=... mirrors=...",
  // "tarball:/path/x.tar.gz", "oci:/path/layout:tag".
  std::string source;
  std::string created_at;     // RFC 3339 UTC
  uint64_t size_bytes = 0;    // apparent size of regular files + symlinks (hard links once)
  uint64_t file_count = 0;    // entries of every type below the root
  uint64_t setuid_files = 0;  // regular files with the setuid or setgid bit
  bool has_bash = false;      // /bin/bash or /usr/bin/bash, resolved inside the rootfs
  // Identity of the content: tarball → sha256 of the archive; OCI → the manifest digest;
  // Debian → "build:sha256:<hex>" over the build spec and the installed package list
  // (var/lib/dpkg/status), so two builds with the same package versions share it.
  std::string digest;
  std::string rootfs;  // absolute path of the root directory
};

struct TemplateStoreOptions {
  std::string root;  // e.g. <data_dir>/templates; created if missing
  TarballLimits tarball_limits;
  Clock* clock = nullptr;  // nullptr: SystemClock
};

struct DebianBaseOptions {
  std::string suite = "bookworm";
  // mmdebstrap variant. "apt" = Essential:yes + apt (smallest that can apt-get install);
  // "minbase" adds the Priority:required set.
  std::string variant = "apt";
  // Installed on top of the base set: bash coreutils git python3 ca-certificates curl procps
  // passwd (passwd provides useradd for the default user).
  std::vector<std::string> extra_packages;
  bool build_essential = false;
  // Apt source lines ("deb URI SUITE COMPONENTS"). Empty: the entries of this host's
  // /etc/apt/sources.list(.d) for `suite`, `suite`-updates and `suite`-security — so the build
  // works wherever apt works.
  std::vector<std::string> mirrors;
  std::chrono::seconds timeout = std::chrono::minutes(30);
};

class TemplateStore {
 public:
  // Creates the root if missing and removes staging directories of interrupted builds.
  static Result<TemplateStore> Open(TemplateStoreOptions options);

  // Every complete template, sorted by name. A template whose metadata cannot be read is
  // skipped with a warning, so one damaged entry does not hide the others.
  Result<std::vector<TemplateInfo>> List() const;
  // not_found names the template and lists the known ones.
  Result<TemplateInfo> Get(std::string_view name) const;
  // failed_precondition while a mount uses the template's rootfs (e.g. an overlay lowerdir).
  Status Remove(std::string_view name);

  // Debian rootfs via mmdebstrap with an unprivileged default user `user` (uid/gid 1000, home
  // /home/user — the E2B convention and the default working directory; no /workspace).
  // Cached: returns the existing template when one with the same spec exists (already_exists
  // if it was built from a different spec). Takes minutes and needs the Debian mirror.
  Result<TemplateInfo> BuildDebianBase(std::string_view name, const DebianBaseOptions& options);

  // A rootfs tarball (see tarball.h for the rules). already_exists if `name` exists.
  Result<TemplateInfo> ImportTarball(std::string_view name, const std::string& path);

  // An OCI image layout (directory with oci-layout and index.json), unpacked with
  // `umoci raw unpack`. The result must hold no device nodes, like a tarball.
  Result<TemplateInfo> ImportOci(std::string_view name, const std::string& layout_dir,
                                 std::string_view tag);

  const std::string& root() const { return options_.root; }

 private:
  explicit TemplateStore(TemplateStoreOptions options) : options_(std::move(options)) {}
  std::string Dir(std::string_view name) const;
  Result<std::vector<std::string>> Names() const;
  Status NotFoundError(std::string_view name) const;

  TemplateStoreOptions options_;
};

Status ValidateTemplateName(std::string_view name);

// $HANGAR_TEMPLATE_CACHE if set and non-empty, else `fallback`. Tests (and developers) point it
// at a directory kept between runs so the Debian base is built once and reused.
std::string TemplateCacheDirFromEnv(std::string fallback = "/var/tmp/hangar-template-cache");

}  // namespace hangar::storage
