// The cgroup v2 backend on a real pure-v2 kernel. This host is cgroup v1 in hybrid mode (its
// cgroup2 mount holds no controllers), so here the v2 half of the node's privileged cgroup
// suite can only skip its controller tests. A microVM guest (QEMU, Debian's cloud kernel) has no
// cgroup file system mounted at all: the test mounts cgroup2 at /sys/fs/cgroup there — every
// controller lands in v2, the layout of a pure-v2 production host — and runs that same suite
// (node_privileged_test, copied into the guest's template with its shared libraries) inside,
// as root, through envd. Every v2 case must pass (one needs a controller to be missing and
// skips, as on any full-v2 host); the v1 cases must skip because detection says "v2". Then the VM is destroyed and nothing is left on the host.
#include <unistd.h>

#include <filesystem>
#include <optional>
#include <regex>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "envd_probe.h"
#include "hangar/base/child.h"
#include "hangar/base/tempdir.h"
#include "hangar/microvm/microvm_driver.h"
#include "hangar/node/cgroup.h"
#include "hangar/node/testing/busybox_template.h"
#include "hangar/storage/template_store.h"

namespace hangar::node::security {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kKernelDir[] = "/var/cache/hangar/guest-kernel";
constexpr char kV2Filter[] = "Backends/CgroupPrivilegedTest.*/v2";
constexpr char kV1Filter[] = "Backends/CgroupPrivilegedTest.*/v1";

// The test names the suite lists for `filter` (gtest's --gtest_list_tests, run on the host).
Result<int> CountListed(const std::string& filter) {
  HANGAR_ASSIGN_OR_RETURN(
      std::string out,
      RunChecked({NODE_PRIVILEGED_TEST_BIN, "--gtest_list_tests", "--gtest_filter=" + filter}));
  int n = 0;
  for (size_t at = 0; (at = out.find("\n  ", at)) != std::string::npos; ++at) ++n;
  return n;
}

// The guest suite's output for a failure message, each line marked as the guest's. ctest
// (CMake's GoogleTest module) reports a test as skipped when its output contains gtest's skip
// marker anywhere — the inner suite's own markers would turn this test's failure into a skip.
std::string GuestOutput(const std::string& out) {
  std::string marked = "guest| ";
  for (char c : out) {
    if (c == '[') {
      marked += "<";
    } else if (c == ']') {
      marked += ">";
    } else {
      marked += c;
    }
    if (c == '\n') marked += "guest| ";
  }
  return marked;
}

TEST(CgroupV2GuestTest, PrivilegedSuitePassesOnAPureV2Kernel) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (QEMU's VMM cgroup)";
  if (!testing::HaveBusybox()) GTEST_SKIP() << "needs busybox-static";
  microvm::MicroVmDriverOptions probe;
  probe.kernel_dir = kKernelDir;
  probe.envd_path = ENVD_BINARY;
  if (Status st = microvm::QemuAvailable(probe); !st.ok()) {
    GTEST_SKIP() << "microVM tier unavailable here: " << st.ToString();
  }
  auto v2_cases = CountListed(kV2Filter);
  ASSERT_TRUE(v2_cases.ok()) << v2_cases.status().ToString();
  ASSERT_GE(*v2_cases, 8) << "the suite's v2 cases";

  auto tmp = TempDir::Make("hcgv2-", "/var/tmp");
  ASSERT_TRUE(tmp.ok()) << tmp.status().ToString();
  storage::TemplateStoreOptions so;
  so.root = tmp->path() + "/templates";
  auto store = storage::TemplateStore::Open(so);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  // The suite goes into the template at the path it has on the host, so it must not be under
  // /tmp (a tmpfs in the guest, hiding it — the build tree may well be there): a copy in the
  // test's own directory under /var/tmp.
  const std::string suite = tmp->path() + "/node_privileged_test";
  ASSERT_TRUE(RunChecked({"cp", NODE_PRIVILEGED_TEST_BIN, suite}).ok());
  auto tmpl = testing::ImportBusyboxTemplate(*store, tmp->path(), "cgv2", {suite});
  ASSERT_TRUE(tmpl.ok()) << tmpl.status().ToString();

  auto layout = DetectCgroupLayout();
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  CgroupOptions co;
  co.root = "hcgv2-" + std::to_string(::getpid());
  auto cgroups = MakeCgroupBackend(*layout, co);
  ASSERT_TRUE(cgroups.ok()) << cgroups.status().ToString();
  {
    microvm::MicroVmDriverOptions o;
    o.data_dir = tmp->path() + "/data";
    o.templates = &*store;
    o.cgroups = cgroups->get();
    o.kernel_dir = kKernelDir;
    o.envd_path = ENVD_BINARY;
    auto driver = microvm::NewMicroVmDriver(o);
    ASSERT_TRUE(driver.ok()) << driver.status().ToString();
    SandboxSpec spec;
    spec.id = "cgv2";
    spec.template_name = "cgv2";
    spec.resources.cpu_millis = 2000;
    spec.resources.memory_mb = 512;
    spec.resources.disk_mb = 512;
    auto sb = (*driver)->Create(spec);
    ASSERT_TRUE(sb.ok()) << sb.status().ToString();

    // No cgroup file system yet; mounting cgroup2 first gives it every controller.
    ShellRun mount = Sh(**sb,
                        "mkdir -p /var/tmp && chmod 1777 /var/tmp && "
                        "mount -t cgroup2 cgroup2 /sys/fs/cgroup && "
                        "grep cgroup /proc/self/mountinfo && cat /sys/fs/cgroup/cgroup.controllers");
    ASSERT_EQ(mount.code, 0) << GuestOutput(mount.out + mount.err);
    EXPECT_THAT(mount.out, Not(HasSubstr(" - cgroup "))) << "a v1 hierarchy in the guest";
    for (const char* c : {"cpu", "memory", "pids", "io"}) {
      EXPECT_TRUE(std::regex_search(mount.out, std::regex(std::string("\\b") + c + "\\b")))
          << c << " not in cgroup.controllers: " << GuestOutput(mount.out);
    }

    const std::string guest_bin = "/bin/node_privileged_test";  // a link to the copy
    // Checked without printing the inner suite's lines verbatim (see GuestOutput).
    auto has = [](const std::string& out, const std::string& needle) {
      return out.find(needle) != std::string::npos;
    };
    const std::string skipped_one = std::string("[  SKIPPED ") + "] 1 test";
    ShellRun v2 = Sh(**sb, guest_bin + " --gtest_filter='" + kV2Filter + "' 2>&1", "root",
                     std::chrono::seconds(420));
    const std::string v2_out = GuestOutput(v2.out + v2.err);
    EXPECT_EQ(v2.code, 0) << v2_out;
    // All but one: the refusal of a limit whose controller is missing needs a host where the
    // memory controller is not delegated, and root of a pure-v2 kernel always has it (the
    // fake-filesystem unit tests cover that path).
    const std::string passed = "[  PASSED  ] " + std::to_string(*v2_cases - 1) + " test";
    EXPECT_TRUE(has(v2.out, passed)) << "want " << *v2_cases - 1 << " passed:\n" << v2_out;
    EXPECT_TRUE(has(v2.out, skipped_one)) << "want exactly one skipped:\n" << v2_out;
    EXPECT_TRUE(has(v2.out, "LimitWithoutControllerIsRefused/v2 (")) << v2_out;
    EXPECT_TRUE(has(v2.out, "memory controller available here")) << v2_out;

    // Detection on the guest says v2: the v1 cases skip for that reason.
    ShellRun v1 = Sh(**sb, guest_bin + " --gtest_filter='" + kV1Filter + "' 2>&1", "root",
                     std::chrono::seconds(120));
    const std::string v1_out = GuestOutput(v1.out + v1.err);
    EXPECT_EQ(v1.code, 0) << v1_out;
    EXPECT_TRUE(has(v1.out, "host is not cgroup v1/hybrid")) << v1_out;

    EXPECT_TRUE((*sb)->Destroy().ok());
  }
  // Nothing of the VM is left on the host.
  auto left = (*cgroups)->List();
  ASSERT_TRUE(left.ok()) << left.status().ToString();
  EXPECT_THAT(*left, ::testing::IsEmpty()) << "leaked cgroups";
  EXPECT_TRUE((*cgroups)->RemoveRoot().ok());
  EXPECT_TRUE(ProcessesMentioning(tmp->path()).empty()) << "a QEMU process outlived the test";
  std::error_code ec;
  EXPECT_TRUE(std::filesystem::is_empty(tmp->path() + "/data/sandboxes", ec) || ec)
      << "leaked sandbox directories";
}

}  // namespace
}  // namespace hangar::node::security
