#include "commands.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "hangar/api/client.h"

namespace hangar::cli {

std::string HumanDuration(std::chrono::milliseconds d) {
  using namespace std::chrono;
  auto ms = d.count();
  if (ms < 1000) return fmt::format("{}ms", ms);
  auto s = ms / 1000;
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m {}s", s / 60, s % 60);
  if (s < 86400) return fmt::format("{}h {}m", s / 3600, (s % 3600) / 60);
  return fmt::format("{}d {}h", s / 86400, (s % 86400) / 3600);
}

namespace {

Result<api::HttpClient> Connect(const GlobalOptions& g) {
  api::ClientOptions opt;
  opt.timeout = std::chrono::milliseconds(g.timeout_ms);
  return api::HttpClient::Create(g.server, opt);
}

int Fail(std::ostream& err, const GlobalOptions& g, const Status& s) {
  err << fmt::format("hangar: error: cannot reach hangard at {}: {}\n", g.server, s.message());
  return 1;
}

}  // namespace

int RunStatus(const GlobalOptions& g, std::ostream& out, std::ostream& err) {
  auto client = Connect(g);
  if (!client.ok()) {
    err << "hangar: error: " << client.status().message() << "\n";
    return 2;
  }
  auto health = client->CallJson("GET", "/healthz");
  if (!health.ok()) return Fail(err, g, health.status());
  auto version = client->CallJson("GET", "/v1/version");
  if (!version.ok()) return Fail(err, g, version.status());

  if (g.json) {
    nlohmann::json j = *version;
    j["server"] = g.server;
    j["health"] = health->value("status", "unknown");
    out << j.dump(2) << "\n";
    return 0;
  }
  const auto& v = *version;
  auto uptime = std::chrono::milliseconds(static_cast<int64_t>(v.value("uptime_s", 0.0) * 1000.0));
  out << fmt::format("hangard {} at {}\n", v.value("version", "?"), g.server);
  out << fmt::format("  role:    {}\n", v.value("role", "?"));
  out << fmt::format("  health:  {}\n", health->value("status", "unknown"));
  out << fmt::format("  started: {} (up {})\n", v.value("started_at", "?"), HumanDuration(uptime));
  return 0;
}

}  // namespace hangar::cli
