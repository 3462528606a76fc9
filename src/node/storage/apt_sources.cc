#include "apt_sources.h"

#include <dirent.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <map>
#include <sstream>

#include <fmt/format.h>

#include "hangar/base/fd.h"

namespace hangar::storage::internal {
namespace {

std::vector<std::string> Words(std::string_view s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (std::isspace(static_cast<unsigned char>(c))) {
      if (!cur.empty()) out.push_back(std::move(cur));
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

std::vector<AptSource> ParseOneLineSources(std::string_view text) {
  std::vector<AptSource> out;
  std::istringstream in{std::string(text)};
  std::string line;
  while (std::getline(in, line)) {
    if (auto hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    auto w = Words(line);
    if (w.empty() || w[0] != "deb") continue;
    size_t i = 1;
    // "[arch=amd64 signed-by=...]" options may span several words.
    if (i < w.size() && w[i].front() == '[') {
      while (i < w.size() && w[i].back() != ']') ++i;
      ++i;
    }
    if (i + 1 >= w.size()) continue;
    AptSource s;
    s.uri = w[i];
    s.suite = w[i + 1];
    s.components.assign(w.begin() + static_cast<long>(i) + 2, w.end());
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<AptSource> ParseDeb822Sources(std::string_view text) {
  std::vector<AptSource> out;
  std::map<std::string, std::string> fields;
  std::string last_key;
  auto flush = [&] {
    if (fields.empty()) return;
    auto get = [&](const char* k) {
      auto it = fields.find(k);
      return it == fields.end() ? std::string() : it->second;
    };
    auto types = Words(get("types"));
    auto enabled_words = Words(Lower(get("enabled")));
    bool enabled = enabled_words.empty() || enabled_words[0] != "no";
    if (enabled && std::find(types.begin(), types.end(), "deb") != types.end()) {
      auto comps = Words(get("components"));
      for (const auto& uri : Words(get("uris"))) {
        for (const auto& suite : Words(get("suites"))) out.push_back({uri, suite, comps});
      }
    }
    fields.clear();
    last_key.clear();
  };
  std::istringstream in{std::string(text)};
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] == '#') continue;
    if (Words(line).empty()) {
      flush();
      continue;
    }
    if (std::isspace(static_cast<unsigned char>(line[0]))) {
      // Continuation line (e.g. an inline Signed-By key block).
      if (!last_key.empty()) fields[last_key] += " " + line;
      continue;
    }
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    last_key = Lower(line.substr(0, colon));
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    fields[last_key] = value;
  }
  flush();
  return out;
}

Result<std::vector<AptSource>> ReadAptSources(const std::string& etc_apt) {
  std::vector<AptSource> out;
  if (auto main = ReadFile(etc_apt + "/sources.list"); main.ok()) {
    out = ParseOneLineSources(*main);
  }
  const std::string dir = etc_apt + "/sources.list.d";
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (struct dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
    ::closedir(d);
  }
  std::sort(names.begin(), names.end());  // apt reads them in this order too
  for (const auto& n : names) {
    const bool list = EndsWith(n, ".list");
    const bool deb822 = EndsWith(n, ".sources");
    if (!list && !deb822) continue;
    HANGAR_ASSIGN_OR_RETURN(std::string text, ReadFile(dir + "/" + n));
    auto more = list ? ParseOneLineSources(text) : ParseDeb822Sources(text);
    out.insert(out.end(), more.begin(), more.end());
  }
  return out;
}

std::vector<std::string> MirrorLinesForSuite(const std::vector<AptSource>& sources,
                                             std::string_view suite) {
  const std::string s(suite);
  const std::array<std::string, 4> wanted = {s, s + "-updates", s + "-security", s + "/updates"};
  std::vector<std::string> out;
  for (const auto& src : sources) {
    if (std::find(wanted.begin(), wanted.end(), src.suite) == wanted.end()) continue;
    std::string comps;
    for (const auto& c : src.components) comps += " " + c;
    if (comps.empty()) comps = " main";
    std::string line = fmt::format("deb {} {}{}", src.uri, src.suite, comps);
    if (std::find(out.begin(), out.end(), line) == out.end()) out.push_back(std::move(line));
  }
  return out;
}

std::vector<std::string> NetworkAptOptions(std::string_view apt_config_dump) {
  static const std::array<std::string_view, 8> kPrefixes = {
      "Acquire::http::Proxy",       "Acquire::https::Proxy", "Acquire::ftp::Proxy",
      "Acquire::Check-Valid-Until", "Acquire::Check-Date",   "Acquire::Retries",
      "Acquire::ForceIPv4",         "Acquire::ForceIPv6"};
  std::vector<std::string> out;
  std::istringstream in{std::string(apt_config_dump)};
  std::string line;
  while (std::getline(in, line)) {
    auto space = line.find(' ');
    if (space == std::string::npos) continue;
    std::string_view key(line.data(), space);
    for (auto p : kPrefixes) {
      // "Acquire::http::Proxy" and "Acquire::http::Proxy::host"; skip empty placeholders.
      if ((key == p ||
           (key.size() > p.size() && key.substr(0, p.size() + 2) == std::string(p) + "::")) &&
          line.substr(space + 1) != "\"\";") {
        out.push_back(line);
      }
    }
  }
  return out;
}

}  // namespace hangar::storage::internal
