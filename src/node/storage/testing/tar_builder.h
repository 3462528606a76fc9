// TarBuilder: writes small tar archives with libarchive's write side, including the malicious
// entries (absolute paths, '..', device nodes, escaping hard links) a real `tar` refuses to make.
#pragma once

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>

#include <string>

namespace hangar::storage::testing {

class TarBuilder {
 public:
  // compression: "" (plain tar) or "gzip".
  explicit TarBuilder(std::string path, std::string compression = "") : path_(std::move(path)) {
    a_ = archive_write_new();
    archive_write_set_format_pax_restricted(a_);
    if (compression == "gzip") archive_write_add_filter_gzip(a_);
    archive_write_open_filename(a_, path_.c_str());
  }
  ~TarBuilder() { Close(); }

  TarBuilder& Dir(const std::string& name, mode_t perm = 0755) {
    return Add(name, AE_IFDIR, perm, "", "", 0, 0);
  }
  TarBuilder& File(const std::string& name, const std::string& data, mode_t perm = 0644,
                   uid_t uid = 0, gid_t gid = 0) {
    return Add(name, AE_IFREG, perm, data, "", uid, gid);
  }
  TarBuilder& Symlink(const std::string& name, const std::string& target) {
    return Add(name, AE_IFLNK, 0777, "", target, 0, 0);
  }
  TarBuilder& Fifo(const std::string& name) { return Add(name, AE_IFIFO, 0644, "", "", 0, 0); }
  TarBuilder& Device(const std::string& name, mode_t type, unsigned maj, unsigned min) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, name.c_str());
    archive_entry_set_filetype(e, type);
    archive_entry_set_perm(e, 0600);
    archive_entry_set_rdevmajor(e, maj);
    archive_entry_set_rdevminor(e, min);
    archive_write_header(a_, e);
    archive_entry_free(e);
    return *this;
  }
  TarBuilder& Hardlink(const std::string& name, const std::string& target) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, name.c_str());
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_hardlink(e, target.c_str());
    archive_entry_set_size(e, 0);
    archive_write_header(a_, e);
    archive_entry_free(e);
    return *this;
  }
  void Close() {
    if (a_ == nullptr) return;
    archive_write_close(a_);
    archive_write_free(a_);
    a_ = nullptr;
  }

 private:
  TarBuilder& Add(const std::string& name, mode_t type, mode_t perm, const std::string& data,
                  const std::string& link, uid_t uid, gid_t gid) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, name.c_str());
    archive_entry_set_filetype(e, type);
    archive_entry_set_perm(e, perm);
    archive_entry_set_uid(e, uid);
    archive_entry_set_gid(e, gid);
    archive_entry_set_mtime(e, 1700000000, 0);
    if (type == AE_IFLNK) archive_entry_set_symlink(e, link.c_str());
    archive_entry_set_size(e, static_cast<la_int64_t>(data.size()));
    archive_write_header(a_, e);
    if (!data.empty()) archive_write_data(a_, data.data(), data.size());
    archive_entry_free(e);
    return *this;
  }

  std::string path_;
  archive* a_ = nullptr;
};

}  // namespace hangar::storage::testing
