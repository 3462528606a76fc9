#include "hangar/gvisor/bundle.h"

#include <algorithm>
#include <set>

#include <gtest/gtest.h>

namespace hangar::gvisor {
namespace {

using Json = nlohmann::json;

BundleSpec Good() {
  BundleSpec b;
  b.sandbox.id = "abc123";
  b.sandbox.template_name = "busybox";
  b.sandbox.resources.cpu_millis = 1500;
  b.sandbox.resources.memory_mb = 256;
  b.sandbox.resources.pids = 100;
  b.sandbox.resources.read_iops = 300;
  b.sandbox.resources.write_bps = 10 << 20;
  b.sandbox.env = {{"FOO", "bar"}, {"PATH", "/custom/bin"}};
  b.rootfs = "/data/sb/abc123/rootfs";
  b.init_host_path = "/usr/lib/hangar/envd";
  b.argv = {kInitPathInside, "--listen", "unix:/run/hangar/envd.sock"};
  b.socket_dir = "/data/sb/abc123/run";
  b.cgroups_path = "/hangar-gvisor/abc123";
  b.disk_major = 7;
  b.disk_minor = 3;
  return b;
}

const Json* FindMount(const Json& c, const std::string& dest) {
  for (const auto& m : c["mounts"]) {
    if (m["destination"] == dest) return &m;
  }
  return nullptr;
}

std::set<std::string> Strings(const Json& a) {
  std::set<std::string> s;
  for (const auto& v : a) s.insert(v.get<std::string>());
  return s;
}

TEST(BundleTest, ProcessIsTheInitAsSandboxRootWithTheDefaultCapabilities) {
  auto c = MakeOciConfig(Good());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const Json& p = (*c)["process"];
  EXPECT_EQ(p["args"], Json({kInitPathInside, "--listen", "unix:/run/hangar/envd.sock"}));
  EXPECT_EQ(p["user"]["uid"], 0);
  EXPECT_EQ(p["cwd"], "/");
  EXPECT_EQ(p["terminal"], false);
  EXPECT_EQ(p["noNewPrivileges"], true);
  // spec.env overrides the default PATH and is sorted by name.
  EXPECT_EQ(p["env"], Json({"FOO=bar", "PATH=/custom/bin"}));
  std::set<std::string> caps = Strings(p["capabilities"]["bounding"]);
  EXPECT_TRUE(caps.count("CAP_CHOWN"));
  EXPECT_TRUE(caps.count("CAP_SETUID"));
  for (const char* forbidden :
       {"CAP_SYS_ADMIN", "CAP_NET_RAW", "CAP_SYS_PTRACE", "CAP_NET_ADMIN", "CAP_SYS_MODULE"}) {
    EXPECT_FALSE(caps.count(forbidden)) << forbidden;
  }
  EXPECT_EQ(p["capabilities"]["effective"], p["capabilities"]["bounding"]);
  EXPECT_TRUE(p["capabilities"]["ambient"].empty());
  EXPECT_TRUE(p["capabilities"]["inheritable"].empty());
}

TEST(BundleTest, NoUserNamespaceAndTheOtherFiveNamespaces) {
  auto c = MakeOciConfig(Good());
  ASSERT_TRUE(c.ok());
  std::set<std::string> types;
  for (const auto& ns : (*c)["linux"]["namespaces"]) types.insert(ns["type"].get<std::string>());
  EXPECT_EQ(types, (std::set<std::string>{"pid", "ipc", "uts", "mount", "network"}));
  EXPECT_FALSE((*c)["linux"].contains("uidMappings"));
  EXPECT_EQ((*c)["hostname"], "abc123");
  EXPECT_EQ((*c)["root"]["path"], "/data/sb/abc123/rootfs");
  EXPECT_EQ((*c)["root"]["readonly"], false);
}

TEST(BundleTest, ResourcesAndThrottlesOnTheSandboxDisk) {
  auto c = MakeOciConfig(Good());
  ASSERT_TRUE(c.ok());
  const Json& r = (*c)["linux"]["resources"];
  EXPECT_EQ(r["memory"]["limit"], int64_t{256} << 20);
  EXPECT_EQ(r["memory"]["swap"], int64_t{256} << 20);
  EXPECT_EQ(r["cpu"]["quota"], 150000);
  EXPECT_EQ(r["cpu"]["period"], 100000);
  EXPECT_EQ(r["pids"]["limit"], 100);
  EXPECT_EQ(r["blockIO"]["throttleReadIOPSDevice"],
            Json::array({{{"major", 7}, {"minor", 3}, {"rate", 300}}}));
  EXPECT_EQ(r["blockIO"]["throttleWriteBpsDevice"],
            Json::array({{{"major", 7}, {"minor", 3}, {"rate", 10 << 20}}}));
  EXPECT_FALSE(r["blockIO"].contains("throttleWriteIOPSDevice"));  // 0 = unlimited
  EXPECT_EQ((*c)["linux"]["cgroupsPath"], "/hangar-gvisor/abc123");

  BundleSpec no_disk = Good();
  no_disk.disk_major = no_disk.disk_minor = 0;
  auto c2 = MakeOciConfig(no_disk);
  ASSERT_TRUE(c2.ok());
  EXPECT_FALSE((*c2)["linux"]["resources"].contains("blockIO"));
}

TEST(BundleTest, MountsInitReadOnlySocketDirNoexecAndMaskedPaths) {
  auto c = MakeOciConfig(Good());
  ASSERT_TRUE(c.ok());
  const Json* init = FindMount(*c, kInitPathInside);
  ASSERT_NE(init, nullptr);
  EXPECT_EQ((*init)["source"], "/usr/lib/hangar/envd");
  EXPECT_TRUE(Strings((*init)["options"]).count("ro"));
  const Json* run = FindMount(*c, kSocketDirInside);
  ASSERT_NE(run, nullptr);
  EXPECT_EQ((*run)["source"], "/data/sb/abc123/run");
  EXPECT_TRUE(Strings((*run)["options"]).count("noexec"));
  const Json* internal = FindMount(*c, kInternalSocketDirInside);
  ASSERT_NE(internal, nullptr);
  EXPECT_EQ((*internal)["type"], "tmpfs");
  EXPECT_TRUE(Strings((*internal)["options"]).count("mode=700"));
  const Json* tmp = FindMount(*c, "/tmp");
  ASSERT_NE(tmp, nullptr);
  EXPECT_TRUE(Strings((*tmp)["options"]).count("size=134217728"));  // half the memory limit
  const Json* sys = FindMount(*c, "/sys");
  ASSERT_NE(sys, nullptr);
  EXPECT_TRUE(Strings((*sys)["options"]).count("ro"));
  EXPECT_TRUE(Strings((*c)["linux"]["maskedPaths"]).count("/proc/kcore"));
  EXPECT_TRUE(Strings((*c)["linux"]["readonlyPaths"]).count("/proc/sys"));
  EXPECT_TRUE(Strings((*c)["linux"]["readonlyPaths"]).count("/proc/sysrq-trigger"));
}

TEST(BundleTest, BadInputIsRefusedNamingTheField) {
  struct Case {
    const char* name;
    void (*mutate)(BundleSpec&);
    const char* expect;
  };
  const Case cases[] = {
      {"id", [](BundleSpec& b) { b.sandbox.id = "Bad_Id"; }, "sandbox id"},
      {"empty id", [](BundleSpec& b) { b.sandbox.id = ""; }, "sandbox id"},
      {"rootfs", [](BundleSpec& b) { b.rootfs = "rel/rootfs"; }, "rootfs"},
      {"init", [](BundleSpec& b) { b.init_host_path = ""; }, "init_host_path"},
      {"socket", [](BundleSpec& b) { b.socket_dir = "run"; }, "socket_dir"},
      {"cgroup", [](BundleSpec& b) { b.cgroups_path = "x"; }, "cgroups_path"},
      {"argv", [](BundleSpec& b) { b.argv.clear(); }, "argv"},
      {"memory", [](BundleSpec& b) { b.sandbox.resources.memory_mb = 0; }, "memory_mb"},
      {"env", [](BundleSpec& b) { b.sandbox.env["A=B"] = "x"; }, "env name 'A=B'"},
  };
  for (const Case& k : cases) {
    BundleSpec b = Good();
    k.mutate(b);
    auto c = MakeOciConfig(b);
    ASSERT_FALSE(c.ok()) << k.name;
    EXPECT_EQ(c.status().code(), Code::kInvalidArgument) << k.name;
    EXPECT_NE(c.status().message().find(k.expect), std::string::npos)
        << k.name << ": " << c.status().ToString();
  }
}

}  // namespace
}  // namespace hangar::gvisor
