// The configuration of hangard: every option, once. Its YAML key, environment variable and flag
// are derived from the key (see base/config.h); docs/configuration.md lists them.
#pragma once

#include "hangar/base/config.h"

namespace hangar::daemon {

ConfigSchema DaemonSchema();

}  // namespace hangar::daemon
