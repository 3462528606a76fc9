// The envd protocol version Hangar's envd implements, as E2B numbers it.
//
// The stock e2b SDK reads `envdVersion` from the sandbox-create response and turns features on
// by it (js-sdk src/envd/versions.ts). 0.6.4 is the newest version whose features envd has:
//   0.1.4 recursive WatchDir · 0.3.0 stdin flag on Start · 0.4.0 default user (no Authorization
//   header needed) · 0.5.2 CloseStdin · 0.5.7 octet-stream uploads · 0.6.2 file metadata
//   (X-Metadata-* → user.e2b.* xattrs) · 0.6.3 include_entry on watch events ·
//   0.6.4 allow_network_mounts on watches.
// Raise it only together with the features of the newer version.
#pragma once

#include <string_view>

namespace hangar::envd {

inline constexpr std::string_view kEnvdVersion = "0.6.4";
inline constexpr uint16_t kEnvdPort = 49983;  // where E2B sandboxes serve envd

}  // namespace hangar::envd
