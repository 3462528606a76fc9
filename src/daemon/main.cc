// hangard: the Hangar daemon. Roles: embedded (default: control + node), control, node.
//
// Configuration precedence: flags > environment (HANGAR_*) > YAML file (--config or
// HANGAR_CONFIG) > defaults. `hangard --print-config` shows each value and where it came from.
// Exit codes: 0 after a graceful stop on SIGTERM/SIGINT, 1 when start-up fails, 2 for bad
// usage or configuration.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <CLI/CLI.hpp>

#include "daemon.h"
#include "hangar/base/config.h"
#include "hangar/base/fd.h"
#include "hangar/base/log.h"
#include "options.h"

namespace {

int Fail(int code, const std::string& message) {
  std::cerr << "hangard: error: " << message << "\n";
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace hangar;
  ConfigSchema schema = daemon::DaemonSchema();

  CLI::App app{"hangard — the Hangar daemon: sandboxes for fleets of AI agents", "hangard"};
  app.set_version_flag("--version", HANGAR_VERSION);
  std::string config_path;
  bool print_config = false;
  app.add_option("--config", config_path, "YAML configuration file (default: $HANGAR_CONFIG)");
  app.add_flag("--print-config", print_config,
               "print the resolved configuration with each value's source, then exit");
  std::map<std::string, std::string> flag_values;
  for (const auto& o : schema.options()) {
    std::string help = fmt::format("{} [default: {}; env {}]", o.help,
                                   o.default_value.empty() ? "\"\"" : o.default_value, o.EnvName());
    auto* opt = app.add_option_function<std::string>(
        o.FlagName(), [&flag_values, key = o.key](const std::string& v) { flag_values[key] = v; },
        help);
    switch (o.type) {
      case OptionType::kEnum:
        opt->type_name(fmt::format("{}", fmt::join(o.choices, "|")));
        break;
      case OptionType::kInt:
        opt->type_name("INT");
        break;
      case OptionType::kBool:
        opt->type_name("true|false");
        break;
      case OptionType::kString:
        opt->type_name("TEXT");
        break;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return Fail(2, fmt::format("{} (see hangard --help)", e.what()));
  }

  ConfigInputs inputs;
  inputs.env = ProcessEnvironment();
  inputs.flags = flag_values;
  if (config_path.empty()) {
    if (auto it = inputs.env.find("HANGAR_CONFIG"); it != inputs.env.end()) {
      config_path = it->second;
    }
  }
  inputs.env.erase("HANGAR_CONFIG");
  if (!config_path.empty()) {
    auto text = ReadFile(config_path);
    if (!text.ok()) return Fail(2, fmt::format("config file: {}", text.status().message()));
    inputs.file_text = std::move(*text);
    inputs.file_name = config_path;
  }
  auto config = ResolveConfig(schema, inputs);
  if (!config.ok()) return Fail(2, config.status().message());
  if (print_config) {
    std::cout << config->Describe();
    return 0;
  }
  log::Init(*log::ParseFormat(config->GetString("log.format")),
            *log::ParseLevel(config->GetString("log.level")));

  // Termination signals are taken synchronously by this thread (sigwait); every thread the
  // daemon starts inherits the mask, so none of them is interrupted by one.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto d = daemon::Daemon::Start(*config);
  if (!d.ok()) return Fail(1, d.status().message());
  std::cout << "hangard: listening on http://" << (*d)->endpoint() << std::endl;

  int sig = 0;
  sigwait(&stop_signals, &sig);
  log::Info("signal received", {{"signal", strsignal(sig)}});
  Status st = (*d)->Stop(std::chrono::milliseconds(config->GetInt("shutdown_grace_ms")));
  // A stop that had to force stragglers is still a clean, intended exit.
  if (!st.ok() && st.code() != Code::kDeadlineExceeded) return Fail(1, st.message());
  return 0;
}
