// bench_http_server: GET /v1/version on the Hangar HTTP server, for bench/http/run.sh.
//
//   bench_http_server [--port N] [--threads N] [--access-log]
//
// Serves until SIGINT/SIGTERM, then stops gracefully and exits 0. The access log is off unless
// asked for, as in the benchmark; the body is serialized per request, as a real handler does.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "hangar/api/json.h"
#include "hangar/api/router.h"
#include "hangar/api/server.h"
#include "hangar/api/signals.h"
#include "hangar/base/log.h"

namespace {

int Usage() {
  std::fprintf(stderr, "usage: bench_http_server [--port N] [--threads N] [--access-log]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace hangar;
  api::ServerOptions opts;
  opts.port = 18082;
  opts.access_log = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--port" && i + 1 < argc) {
      opts.port = static_cast<uint16_t>(std::atoi(argv[++i]));
    } else if (arg == "--threads" && i + 1 < argc) {
      opts.threads = std::atoi(argv[++i]);
    } else if (arg == "--access-log") {
      opts.access_log = true;
    } else {
      return Usage();
    }
  }

  api::SignalWaiter signals;
  api::Router router;
  static const nlohmann::json kVersion = {{"version", "0.1.0"}, {"api", "v1"}};
  Status s = router.Get("/v1/version", [](const api::Request&) -> Result<api::Response> {
    return api::JsonResponse(kVersion);
  });
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  api::Server server(opts, std::move(router));
  if (s = server.Start(); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  int sig = signals.Wait();
  log::Info("bench_http_server stopping", {{"signal", sig}});
  s = server.Shutdown(std::chrono::seconds(5));
  return s.ok() ? 0 : 1;
}
