#include "hangar/storage/template_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apt_sources.h"
#include "hangar/base/child.h"
#include "hangar/base/fd.h"
#include "hangar/base/log.h"
#include "hangar/base/random.h"
#include "hangar/base/tempdir.h"
#include "storage_util.h"

namespace hangar::storage {
namespace {

using internal::JoinPath;

constexpr std::string_view kStaging = ".staging";
constexpr std::string_view kLocks = ".locks";
constexpr std::string_view kMetadata = "template.json";
constexpr int kFormatVersion = 1;

// The base set every Debian template has (bash for the E2B SDK's commands, git/python3/curl
// for agents, procps for ps/kill, passwd for useradd).
const std::vector<std::string> kDebianBasePackages = {
    "bash", "coreutils", "git", "python3", "ca-certificates", "curl", "procps", "passwd"};

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

Status ValidatePackageName(const std::string& p) {
  bool ok = p.size() >= 2 && IsLowerAlnum(p[0]) && std::all_of(p.begin(), p.end(), [](char c) {
              return IsLowerAlnum(c) || c == '+' || c == '-' || c == '.';
            });
  if (!ok) return Status::InvalidArgument(fmt::format("invalid Debian package name '{}'", p));
  return Status::Ok();
}

Status ValidateOciTag(std::string_view tag) {
  // OCI ref.name for a tag: [A-Za-z0-9_][A-Za-z0-9._-]{0,127}
  auto word = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  bool ok =
      !tag.empty() && tag.size() <= 128 && word(tag[0]) &&
      std::all_of(tag.begin(), tag.end(), [&](char c) { return word(c) || c == '.' || c == '-'; });
  if (!ok) return Status::InvalidArgument(fmt::format("invalid OCI tag '{}'", tag));
  return Status::Ok();
}

// flock(2) on <root>/.locks/<name>.lock: one build/import/remove per name at a time, across
// processes (ctest runs test cases in parallel processes that share the template cache).
class NameLock {
 public:
  static Result<NameLock> Acquire(const std::string& root, std::string_view name, bool wait) {
    const std::string path = JoinPath(JoinPath(root, kLocks), std::string(name) + ".lock");
    HANGAR_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDWR | O_CREAT, 0600));
    int op = LOCK_EX | (wait ? 0 : LOCK_NB);
    while (::flock(fd.get(), op) != 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno,
                               fmt::format("flock({}, LOCK_EX{})", path, wait ? "" : "|LOCK_NB"));
    }
    NameLock l;
    l.fd_ = std::move(fd);
    return l;
  }

 private:
  UniqueFd fd_;
};

nlohmann::json ToJson(const TemplateInfo& t) {
  return {{"format_version", kFormatVersion},
          {"name", t.name},
          {"source", t.source},
          {"created_at", t.created_at},
          {"size_bytes", t.size_bytes},
          {"file_count", t.file_count},
          {"setuid_files", t.setuid_files},
          {"has_bash", t.has_bash},
          {"digest", t.digest}};
}

Result<TemplateInfo> ReadMetadata(const std::string& dir) {
  const std::string path = JoinPath(dir, kMetadata);
  HANGAR_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  // nlohmann throws on malformed input; convert at the call site (no exception leaves here).
  try {
    auto j = nlohmann::json::parse(text);
    TemplateInfo t;
    t.name = j.at("name").get<std::string>();
    t.source = j.at("source").get<std::string>();
    t.created_at = j.at("created_at").get<std::string>();
    t.size_bytes = j.at("size_bytes").get<uint64_t>();
    t.file_count = j.at("file_count").get<uint64_t>();
    t.setuid_files = j.value("setuid_files", uint64_t{0});
    t.has_bash = j.at("has_bash").get<bool>();
    t.digest = j.at("digest").get<std::string>();
    t.rootfs = JoinPath(dir, "rootfs");
    return t;
  } catch (const nlohmann::json::exception& e) {
    return Status::Internal(fmt::format("{}: bad template metadata: {}", path, e.what()));
  }
}

// bin/bash or usr/bin/bash resolved with the rootfs as "/" (bookworm's /bin is a symlink, and an
// imported image's absolute symlinks must not be followed onto the host).
bool HasBash(const std::string& rootfs) {
  auto root = OpenFile(rootfs, O_RDONLY | O_DIRECTORY);
  if (!root.ok()) return false;
  for (const char* p : {"bin/bash", "usr/bin/bash"}) {
    auto fd = internal::OpenInRoot(root->get(), p, O_PATH);
    struct stat st;
    if (fd.ok() && ::fstat(fd->get(), &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111)) {
      return true;
    }
  }
  return false;
}

Status SyncTree(const std::string& dir) {
  HANGAR_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(dir, O_RDONLY | O_DIRECTORY));
  if (::syncfs(fd.get()) != 0) return Status::FromErrno(errno, fmt::format("syncfs({})", dir));
  return Status::Ok();
}

Status FsyncDir(const std::string& dir) {
  HANGAR_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(dir, O_RDONLY | O_DIRECTORY));
  if (::fsync(fd.get()) != 0) return Status::FromErrno(errno, fmt::format("fsync({})", dir));
  return Status::Ok();
}

// Device nodes mmdebstrap made for the build (the runtime mounts its own /dev).
Status RemoveDeviceNodes(const std::string& dev_dir) {
  DIR* d = ::opendir(dev_dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return Status::Ok();
    return Status::FromErrno(errno, fmt::format("opendir({})", dev_dir));
  }
  std::unique_ptr<DIR, int (*)(DIR*)> closer(d, ::closedir);
  while (struct dirent* e = ::readdir(d)) {
    struct stat st;
    if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
      if (::unlinkat(::dirfd(d), e->d_name, 0) != 0) {
        return Status::FromErrno(errno, fmt::format("unlink({}/{})", dev_dir, e->d_name));
      }
    }
  }
  return Status::Ok();
}

}  // namespace

Status ValidateTemplateName(std::string_view name) {
  bool ok = !name.empty() && name.size() <= 63 && IsLowerAlnum(name[0]) &&
            std::all_of(name.begin(), name.end(),
                        [](char c) { return IsLowerAlnum(c) || c == '.' || c == '_' || c == '-'; });
  if (!ok) {
    return Status::InvalidArgument(
        fmt::format("invalid template name '{}': must match ^[a-z0-9][a-z0-9._-]{{0,62}}$", name));
  }
  return Status::Ok();
}

std::string TemplateCacheDirFromEnv(std::string fallback) {
  const char* v = std::getenv("HANGAR_TEMPLATE_CACHE");
  return (v != nullptr && *v != '\0') ? std::string(v) : std::move(fallback);
}

Result<TemplateStore> TemplateStore::Open(TemplateStoreOptions options) {
  if (options.root.empty()) return Status::InvalidArgument("template store root is empty");
  if (options.clock == nullptr) options.clock = &SystemClock::Instance();
  HANGAR_TRY(MakeDirs(options.root));
  options.root = internal::CanonicalOrSame(options.root);
  if (::chmod(options.root.c_str(), 0700) != 0) {
    return Status::FromErrno(errno, fmt::format("chmod({}, 0700)", options.root));
  }
  const std::string staging = JoinPath(options.root, kStaging);
  HANGAR_TRY(MakeDirs(staging));
  HANGAR_TRY(MakeDirs(JoinPath(options.root, kLocks)));
  // Leftovers of interrupted builds. A staging dir whose name lock is held belongs to a build
  // still running in another process.
  if (DIR* d = ::opendir(staging.c_str())) {
    std::vector<std::string> names;
    while (struct dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(std::move(n));
    }
    ::closedir(d);
    for (const auto& n : names) {
      std::string owner = n.substr(0, n.rfind('.'));
      auto lock = NameLock::Acquire(options.root, owner, /*wait=*/false);
      if (!lock.ok()) continue;
      log::Info("removing interrupted template build", {{"path", JoinPath(staging, n)}});
      Status st = RemoveTree(JoinPath(staging, n));
      if (!st.ok()) log::Warn("cannot remove staging dir", {{"error", st.ToString()}});
    }
  }
  return TemplateStore(std::move(options));
}

std::string TemplateStore::Dir(std::string_view name) const {
  return JoinPath(options_.root, name);
}

Result<std::vector<std::string>> TemplateStore::Names() const {
  DIR* d = ::opendir(options_.root.c_str());
  if (d == nullptr) return Status::FromErrno(errno, fmt::format("opendir({})", options_.root));
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;  // ., .., .staging, .locks
    if (ValidateTemplateName(e->d_name).ok()) names.emplace_back(e->d_name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

Result<std::vector<TemplateInfo>> TemplateStore::List() const {
  HANGAR_ASSIGN_OR_RETURN(auto names, Names());
  std::vector<TemplateInfo> out;
  for (const auto& n : names) {
    auto t = ReadMetadata(Dir(n));
    if (!t.ok()) {
      log::Warn("skipping unreadable template", {{"name", n}, {"error", t.status().ToString()}});
      continue;
    }
    out.push_back(std::move(*t));
  }
  return out;
}

Status TemplateStore::NotFoundError(std::string_view name) const {
  auto names = Names();
  std::string known = "(none)";
  if (names.ok() && !names->empty()) known = fmt::format("{}", fmt::join(*names, ", "));
  return Status::NotFound(fmt::format("template '{}' not found in {}; known templates: {}", name,
                                      options_.root, known));
}

Result<TemplateInfo> TemplateStore::Get(std::string_view name) const {
  HANGAR_TRY(ValidateTemplateName(name));
  struct stat st;
  if (::stat(Dir(name).c_str(), &st) != 0) {
    if (errno == ENOENT) return NotFoundError(name);
    return Status::FromErrno(errno, fmt::format("stat({})", Dir(name)));
  }
  return ReadMetadata(Dir(name));
}

Status TemplateStore::Remove(std::string_view name) {
  HANGAR_TRY(ValidateTemplateName(name));
  HANGAR_ASSIGN_OR_RETURN(NameLock lock, NameLock::Acquire(options_.root, name, true));
  const std::string dir = Dir(name);
  if (::access(dir.c_str(), F_OK) != 0) return NotFoundError(name);
  // Deleting files under a mounted overlay's lowerdir is undefined behaviour for overlayfs.
  HANGAR_ASSIGN_OR_RETURN(auto users, internal::MountinfoLinesMentioning(JoinPath(dir, "rootfs")));
  if (!users.empty()) {
    return Status::FailedPrecondition(fmt::format("template '{}' is in use by {} mount(s), e.g. {}",
                                                  name, users.size(), users[0]));
  }
  // Disappear atomically first; the slow delete happens in staging (finished by the next Open
  // if interrupted).
  const std::string doomed = JoinPath(JoinPath(options_.root, kStaging),
                                      fmt::format("{}.rm{}", name, RandomHex(4)));
  if (::rename(dir.c_str(), doomed.c_str()) != 0) {
    return Status::FromErrno(errno, fmt::format("rename({}, {})", dir, doomed));
  }
  log::Info("template removed", {{"name", std::string(name)}});
  return RemoveTree(doomed);
}

namespace {

// Inspects a staged rootfs, writes its metadata and moves it into place with one rename.
Result<TemplateInfo> Publish(TempDir staging, const std::string& final_dir, TemplateInfo info,
                             Clock& clock) {
  const std::string rootfs = JoinPath(staging.path(), "rootfs");
  HANGAR_ASSIGN_OR_RETURN(internal::TreeStats stats, internal::InspectTree(rootfs));
  if (!stats.first_device.empty()) {
    return Status::InvalidArgument(fmt::format(
        "template '{}': entry '{}' is a device node or socket; templates may not contain them",
        info.name, stats.first_device));
  }
  info.file_count = stats.entries;
  info.size_bytes = stats.bytes;
  info.setuid_files = stats.setuid_files;
  info.has_bash = HasBash(rootfs);
  info.created_at = FormatRfc3339(clock.WallNow());
  HANGAR_TRY(WriteFileAtomic(JoinPath(staging.path(), kMetadata), ToJson(info).dump(2) + "\n"));
  // Durable before visible: after a power cut a template either is absent or whole.
  HANGAR_TRY(SyncTree(staging.path()));
  if (::chmod(staging.path().c_str(), 0755) != 0) {
    return Status::FromErrno(errno, fmt::format("chmod({}, 0755)", staging.path()));
  }
  if (::rename(staging.path().c_str(), final_dir.c_str()) != 0) {
    if (errno == EEXIST || errno == ENOTEMPTY) {
      return Status::AlreadyExists(fmt::format("template '{}' already exists", info.name));
    }
    return Status::FromErrno(errno, fmt::format("rename({}, {})", staging.path(), final_dir));
  }
  staging.Release();
  auto slash = final_dir.rfind('/');
  HANGAR_TRY(FsyncDir(final_dir.substr(0, slash == 0 ? 1 : slash)));
  info.rootfs = JoinPath(final_dir, "rootfs");
  log::Info("template created", {{"name", info.name},
                                 {"source", info.source},
                                 {"files", info.file_count},
                                 {"bytes", info.size_bytes}});
  return info;
}

Result<TempDir> MakeStaging(const std::string& root, std::string_view name) {
  return TempDir::Make(std::string(name) + ".", JoinPath(root, kStaging));
}

}  // namespace

Result<TemplateInfo> TemplateStore::BuildDebianBase(std::string_view name,
                                                    const DebianBaseOptions& options) {
  HANGAR_TRY(ValidateTemplateName(name));
  if (options.variant != "apt" && options.variant != "minbase" && options.variant != "essential") {
    return Status::InvalidArgument(fmt::format(
        "invalid mmdebstrap variant '{}': want apt, minbase or essential", options.variant));
  }
  if (!ValidateTemplateName(options.suite).ok()) {
    return Status::InvalidArgument(fmt::format("invalid Debian suite '{}'", options.suite));
  }
  std::set<std::string> packages(kDebianBasePackages.begin(), kDebianBasePackages.end());
  for (const auto& p : options.extra_packages) {
    HANGAR_TRY(ValidatePackageName(p));
    packages.insert(p);
  }
  if (options.build_essential) packages.insert("build-essential");
  const std::string source = fmt::format("debian:{} variant={} packages={}", options.suite,
                                         options.variant, fmt::join(packages, ","));

  HANGAR_ASSIGN_OR_RETURN(NameLock lock, NameLock::Acquire(options_.root, name, true));
  if (auto existing = Get(name); existing.ok()) {
    if (existing->source != source) {
      return Status::AlreadyExists(
          fmt::format("template '{}' exists but was built from '{}', not '{}'; remove it first",
                      name, existing->source, source));
    }
    return existing;
  } else if (existing.status().code() != Code::kNotFound) {
    return existing.status();
  }

  std::vector<std::string> mirrors = options.mirrors;
  if (mirrors.empty()) {
    HANGAR_ASSIGN_OR_RETURN(auto sources, internal::ReadAptSources());
    mirrors = internal::MirrorLinesForSuite(sources, options.suite);
    if (mirrors.empty()) {
      return Status::FailedPrecondition(fmt::format(
          "no apt source for suite '{}' in /etc/apt/sources.list(.d); pass mirrors explicitly",
          options.suite));
    }
  }
  std::vector<std::string> argv = {"mmdebstrap", "--quiet", "--variant=" + options.variant,
                                   fmt::format("--include={}", fmt::join(packages, ","))};
  if (auto dump = RunCommand({"apt-config", "dump"}); dump.ok() && dump->status.success()) {
    for (auto& opt : internal::NetworkAptOptions(dump->out)) argv.push_back("--aptopt=" + opt);
  }
  // E2B's templates have an unprivileged `user` (1000:1000) whose home is the working dir.
  argv.push_back(
      "--customize-hook=chroot \"$1\" useradd --create-home --uid 1000 --user-group "
      "--shell /bin/bash user");
  HANGAR_ASSIGN_OR_RETURN(TempDir staging, MakeStaging(options_.root, name));
  const std::string rootfs = JoinPath(staging.path(), "rootfs");
  argv.push_back(options.suite);
  argv.push_back(rootfs);
  argv.insert(argv.end(), mirrors.begin(), mirrors.end());

  log::Info("building Debian template", {{"name", std::string(name)}, {"source", source}});
  auto started = options_.clock->Now();
  auto out = RunChecked(argv, options.timeout);
  if (!out.ok()) return out.status().With(fmt::format("building template '{}'", name));
  HANGAR_TRY(RemoveDeviceNodes(JoinPath(rootfs, "dev")));

  TemplateInfo info;
  info.name = std::string(name);
  info.source = source;
  internal::Sha256 id;
  id.Update(source);
  id.Update("\n");
  HANGAR_ASSIGN_OR_RETURN(std::string dpkg_status,
                          ReadFile(JoinPath(rootfs, "var/lib/dpkg/status")));
  id.Update(dpkg_status);
  info.digest = "build:sha256:" + id.HexDigest();
  auto result = Publish(std::move(staging), Dir(name), std::move(info), *options_.clock);
  if (result.ok()) {
    log::Info("Debian template built",
              {{"name", std::string(name)},
               {"seconds", std::chrono::duration<double>(options_.clock->Now() - started).count()},
               {"mirrors", fmt::format("{}", fmt::join(mirrors, " | "))}});
  }
  return result;
}

Result<TemplateInfo> TemplateStore::ImportTarball(std::string_view name, const std::string& path) {
  HANGAR_TRY(ValidateTemplateName(name));
  HANGAR_ASSIGN_OR_RETURN(NameLock lock, NameLock::Acquire(options_.root, name, true));
  if (::access(Dir(name).c_str(), F_OK) == 0) {
    return Status::AlreadyExists(fmt::format("template '{}' already exists", name));
  }
  HANGAR_ASSIGN_OR_RETURN(TempDir staging, MakeStaging(options_.root, name));
  const std::string rootfs = JoinPath(staging.path(), "rootfs");
  if (::mkdir(rootfs.c_str(), 0755) != 0) {
    return Status::FromErrno(errno, fmt::format("mkdir({})", rootfs));
  }
  // ExtractTarball validates every entry before it writes anything; on failure the staging
  // directory goes with `staging`, so nothing is left.
  HANGAR_ASSIGN_OR_RETURN(TarballSummary summary,
                          ExtractTarball(path, rootfs, options_.tarball_limits));
  TemplateInfo info;
  info.name = std::string(name);
  info.source = "tarball:" + internal::CanonicalOrSame(path);
  info.digest = summary.sha256;
  return Publish(std::move(staging), Dir(name), std::move(info), *options_.clock);
}

Result<TemplateInfo> TemplateStore::ImportOci(std::string_view name, const std::string& layout_dir,
                                              std::string_view tag) {
  HANGAR_TRY(ValidateTemplateName(name));
  HANGAR_TRY(ValidateOciTag(tag));
  if (layout_dir.find(':') != std::string::npos) {
    // umoci takes "path:tag" and would split the path.
    return Status::InvalidArgument(
        fmt::format("OCI layout path '{}' contains ':', which umoci cannot take", layout_dir));
  }
  if (::access(JoinPath(layout_dir, "oci-layout").c_str(), F_OK) != 0) {
    return Status::InvalidArgument(
        fmt::format("'{}' is not an OCI image layout (no oci-layout file)", layout_dir));
  }
  HANGAR_ASSIGN_OR_RETURN(std::string index_text, ReadFile(JoinPath(layout_dir, "index.json")));
  std::string digest;
  std::vector<std::string> tags;
  try {
    auto index = nlohmann::json::parse(index_text);
    for (const auto& m : index.at("manifests")) {
      std::string ref = m.value("annotations", nlohmann::json::object())
                            .value("org.opencontainers.image.ref.name", "");
      if (ref.empty()) continue;
      tags.push_back(ref);
      if (ref == tag) digest = m.at("digest").get<std::string>();
    }
  } catch (const nlohmann::json::exception& e) {
    return Status::InvalidArgument(
        fmt::format("{}/index.json: not a valid OCI index: {}", layout_dir, e.what()));
  }
  if (digest.empty()) {
    return Status::NotFound(
        fmt::format("tag '{}' not found in OCI layout {}; tags: {}", tag, layout_dir,
                    tags.empty() ? "(none)" : fmt::format("{}", fmt::join(tags, ", "))));
  }
  HANGAR_ASSIGN_OR_RETURN(NameLock lock, NameLock::Acquire(options_.root, name, true));
  if (::access(Dir(name).c_str(), F_OK) == 0) {
    return Status::AlreadyExists(fmt::format("template '{}' already exists", name));
  }
  HANGAR_ASSIGN_OR_RETURN(TempDir staging, MakeStaging(options_.root, name));
  const std::string rootfs = JoinPath(staging.path(), "rootfs");
  std::vector<std::string> argv = {"umoci", "raw", "unpack"};
  if (::geteuid() != 0) argv.push_back("--rootless");
  argv.insert(argv.end(), {"--image", fmt::format("{}:{}", layout_dir, tag), rootfs});
  auto out = RunChecked(argv, std::chrono::minutes(10));
  if (!out.ok()) return out.status().With(fmt::format("importing template '{}'", name));
  TemplateInfo info;
  info.name = std::string(name);
  info.source = fmt::format("oci:{}:{}", internal::CanonicalOrSame(layout_dir), tag);
  info.digest = digest;
  return Publish(std::move(staging), Dir(name), std::move(info), *options_.clock);
}

}  // namespace hangar::storage
