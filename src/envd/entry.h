// entry: filesystem.EntryInfo as envd reports it, and user metadata kept in extended attributes.
//
// EntryInfo follows E2B's envd exactly, since the SDK shows these fields to users:
//  - name: the last path component; path: the sandbox path as requested (not symlink-resolved)
//  - type: FILE_TYPE_FILE | FILE_TYPE_DIRECTORY; for a symlink, the type of its target (omitted,
//    i.e. unspecified, for a dangling link or a special file — the SDK skips such entries)
//  - size: of the entry itself (lstat), as a proto3 int64 string
//  - mode: permission bits (0..0777) of the entry, or of the target for a symlink
//  - permissions: Go's os.FileMode string of the entry itself: "-rw-r--r--", "drwxr-xr-x",
//    "Lrwxrwxrwx", "dtrwxrwxrwx" (sticky), "urwxr-xr-x" (setuid), ...
//  - owner, group: names from the sandbox's passwd/group, or the numbers when unknown
//  - modifiedTime: google.protobuf.Timestamp; symlinkTarget: the fully resolved sandbox path
//  - metadata: user.e2b.<key> extended attributes, prefix stripped (omitted when empty)
//
// Thread safety: pure functions over their arguments.
#pragma once

#include <sys/stat.h>

#include <map>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "hangar/base/status.h"
#include "root.h"
#include "users.h"

namespace hangar::envd::internal {

using Metadata = std::map<std::string, std::string>;

// Go's os.FileMode(...).String() for a stat st_mode.
std::string PermissionsString(mode_t mode);

// EntryInfo of `path` (its last component is not followed) as proto3 JSON.
Result<nlohmann::json> EntryJson(const Root& root, UserDb& users, const std::string& path);

// The user.e2b.* attributes of the file `fd` refers to (any kind of descriptor, O_PATH too).
// A filesystem without xattr support has none.
Metadata ReadMetadata(int fd);
// Replaces the metadata of an open regular file (written into a fresh file, so "replace" is
// "set each key"). resource_exhausted on ENOSPC/EDQUOT.
Status WriteMetadata(int fd, const Metadata& metadata);
// E2B's rules: keys and values printable US-ASCII, key ≤ 246 bytes, all of it (with the
// "user.e2b." prefix per key) ≤ 4096 bytes. invalid_argument naming the offending key.
Status ValidateMetadata(const Metadata& metadata);

inline constexpr std::string_view kMetadataXattrPrefix = "user.e2b.";

}  // namespace hangar::envd::internal
