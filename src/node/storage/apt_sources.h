// Reading this host's apt configuration so that BuildDebianBase downloads from the mirror apt
// itself uses (private to src/node/storage).
// Thread safety: stateless.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "hangar/base/status.h"

namespace hangar::storage::internal {

struct AptSource {
  std::string uri;
  std::string suite;
  std::vector<std::string> components;
  bool operator==(const AptSource&) const = default;
};

// "deb [opts] URI SUITE COMPONENT..." lines; deb-src, comments and blank lines are skipped.
std::vector<AptSource> ParseOneLineSources(std::string_view text);
// deb822 paragraphs (Types/URIs/Suites/Components, Enabled: no honoured); one AptSource per
// URI x suite.
std::vector<AptSource> ParseDeb822Sources(std::string_view text);

// <etc_apt>/sources.list and <etc_apt>/sources.list.d/*.{list,sources}.
Result<std::vector<AptSource>> ReadAptSources(const std::string& etc_apt = "/etc/apt");

// The sources for `suite` itself and its -updates and -security pockets, as one-line
// "deb URI SUITE COMPONENTS" strings for mmdebstrap (keyrings come from the host's defaults).
// Third-party repositories that name other suites are left out on purpose.
std::vector<std::string> MirrorLinesForSuite(const std::vector<AptSource>& sources,
                                             std::string_view suite);

// The apt options of this host that decide whether downloads work at all (proxies, Release
// file date checks, retries), from `apt-config dump` output, as mmdebstrap --aptopt values.
std::vector<std::string> NetworkAptOptions(std::string_view apt_config_dump);

}  // namespace hangar::storage::internal
