#include "options.h"

#include "control_role.h"
#include "node_role.h"

namespace hangar::daemon {

ConfigSchema DaemonSchema() {
  ConfigSchema s;
  s.Add({.key = "role",
         .type = OptionType::kEnum,
         .default_value = "embedded",
         .help = "embedded (control and node in one process), control, or node",
         .choices = {"embedded", "control", "node"}});
  s.Add({.key = "data_dir",
         .default_value = "/var/lib/hangar",
         .help = "state directory (database, sandboxes, logs); created if missing"});
  s.Add({.key = "listen",
         .default_value = "127.0.0.1:7070",
         .help = "address:port of the HTTP API; port 0 picks a free port"});
  s.Add({.key = "log.level",
         .type = OptionType::kEnum,
         .default_value = "info",
         .help = "debug, info, warn or error",
         .choices = {"debug", "info", "warn", "error"}});
  s.Add({.key = "log.format",
         .type = OptionType::kEnum,
         .default_value = "text",
         .help = "text (for people) or json (one object per line)",
         .choices = {"text", "json"}});
  s.Add({.key = "http.threads",
         .type = OptionType::kInt,
         .default_value = "0",
         .help = "I/O threads of the HTTP server; 0 = one per CPU",
         .min = 0,
         .max = 256});
  s.Add({.key = "http.blocking_threads",
         .type = OptionType::kInt,
         .default_value = "64",
         .help = "threads for handlers that block (store, node calls, creates waiting for their "
                 "sandbox)",
         .min = 2,
         .max = 4096});
  s.Add({.key = "http.max_body_bytes",
         .type = OptionType::kInt,
         .default_value = "16777216",
         .help = "largest request body accepted (413 above it)",
         .min = 1024,
         .max = int64_t{1} << 32});
  s.Add({.key = "http.max_header_bytes",
         .type = OptionType::kInt,
         .default_value = "16384",
         .help = "largest request header accepted (431 above it)",
         .min = 1024,
         .max = 1 << 20});
  s.Add({.key = "http.read_timeout_ms",
         .type = OptionType::kInt,
         .default_value = "30000",
         .help = "a request must arrive whole within this time",
         .min = 10,
         .max = 3'600'000});
  s.Add({.key = "http.idle_timeout_ms",
         .type = OptionType::kInt,
         .default_value = "60000",
         .help = "idle keep-alive connections are closed after this time",
         .min = 10,
         .max = 3'600'000});
  s.Add({.key = "http.access_log",
         .type = OptionType::kBool,
         .default_value = "true",
         .help = "log one line per request"});
  s.Add({.key = "shutdown_grace_ms",
         .type = OptionType::kInt,
         .default_value = "10000",
         .help = "on SIGTERM/SIGINT, how long in-flight requests may take to finish",
         .min = 0,
         .max = 600'000});
  AddControlOptions(s);
  AddNodeOptions(s);
  return s;
}

}  // namespace hangar::daemon
