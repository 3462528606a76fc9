// hangar_it_template DATA_DIR [NAME]: imports the busybox test template as NAME (default
// "base") into DATA_DIR/templates, for tests and benchmarks that drive a hangard process.
// Exit 0 on success (also when it is already there), 1 with the reason otherwise.
#include <iostream>

#include "harness.h"

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::cerr << "usage: hangar_it_template DATA_DIR [NAME]\n";
    return 2;
  }
  hangar::Status st = hangar::integration::ImportTemplate(argv[1], argc == 3 ? argv[2] : "base");
  if (!st.ok()) {
    std::cerr << "hangar_it_template: " << st.ToString() << "\n";
    return 1;
  }
  return 0;
}
