// Small file helpers shared by the node isolation units (private to src/node).
// Every failure names the call and its arguments (Status::FromErrno).
// Thread safety: stateless; safe from any thread. None of these are async-signal-safe (they
// allocate); code that runs between fork and exec must not use them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "hangar/base/fd.h"
#include "hangar/base/status.h"

namespace hangar::node {

// Writes `data` with a single write(2) to an existing file, without O_TRUNC or O_CREAT: the
// form cgroupfs and /proc/<pid>/{uid,gid}_map require.
Status WriteExistingFile(const std::string& path, std::string_view data);

// Writes `data` to path.tmp and renames it over `path`: readers see the old or the new file
// whole. Unlike base's WriteFileAtomic it does not fsync: node state files must survive a
// crash of the node agent (the page cache does), not of the machine — after a machine crash
// the processes, mounts, loop devices and cgroups they describe are gone anyway, and recovery
// rebuilds from what exists. Saves an fsync (milliseconds, tens under I/O load) per start.
Status WriteFileReplace(const std::string& path, std::string_view data, unsigned mode = 0600);

// Names of the subdirectories of `path` (not "." or ".."), sorted.
Result<std::vector<std::string>> ListSubdirectories(const std::string& path);

// Splits on '\n', dropping empty lines.
std::vector<std::string_view> SplitLines(std::string_view text);

// Parses a base-10 unsigned integer that must span all of `s` (surrounding whitespace allowed).
Result<uint64_t> ParseUint64(std::string_view s);

}  // namespace hangar::node
