// hangar_it_template DATA_DIR [NAME] [--host-program PATH]...: imports the busybox test template
// as NAME (default "base") into DATA_DIR/templates, for tests and benchmarks that drive a hangard
// process. Each --host-program adds a dynamically linked program of this host at the same path
// with its libraries and a /bin/<name> link (e.g. /usr/bin/bash, which the e2b SDK's
// commands.run needs). Exit 0 on success (also when NAME is already there), 1 with the reason
// otherwise, 2 on a usage error.
#include <iostream>
#include <string>
#include <vector>

#include "hangar/base/fd.h"
#include "hangar/base/tempdir.h"
#include "hangar/node/testing/busybox_template.h"
#include "hangar/storage/template_store.h"
#include "harness.h"

namespace {

hangar::Status ImportWith(const std::string& data_dir, const std::string& name,
                          const std::vector<std::string>& host_programs) {
  if (host_programs.empty()) return hangar::integration::ImportTemplate(data_dir, name);
  HANGAR_TRY(hangar::MakeDirs(data_dir));
  hangar::storage::TemplateStoreOptions o;
  o.root = data_dir + "/templates";
  HANGAR_ASSIGN_OR_RETURN(auto store, hangar::storage::TemplateStore::Open(o));
  if (store.Get(name).ok()) return hangar::Status::Ok();
  HANGAR_ASSIGN_OR_RETURN(hangar::TempDir work, hangar::TempDir::Make("hangar-it-tmpl-"));
  return hangar::node::testing::ImportBusyboxTemplate(store, work.path(), name, host_programs)
      .status();
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> positional, host_programs;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--host-program" && i + 1 < argc) {
      host_programs.push_back(argv[++i]);
    } else if (a.rfind("--", 0) == 0) {
      positional.clear();
      break;
    } else {
      positional.push_back(a);
    }
  }
  if (positional.empty() || positional.size() > 2) {
    std::cerr << "usage: hangar_it_template DATA_DIR [NAME] [--host-program PATH]...\n";
    return 2;
  }
  const std::string name = positional.size() == 2 ? positional[1] : "base";
  hangar::Status st = ImportWith(positional[0], name, host_programs);
  if (!st.ok()) {
    std::cerr << "hangar_it_template: " << st.ToString() << "\n";
    return 1;
  }
  return 0;
}
