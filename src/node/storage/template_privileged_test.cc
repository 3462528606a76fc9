// TemplateStore behaviour that needs root: a template in use by a mount cannot be removed.
#include <sys/mount.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "hangar/base/mount.h"
#include "hangar/base/tempdir.h"
#include "hangar/storage/template_store.h"
#include "testing/tar_builder.h"

namespace hangar::storage {
namespace {

TEST(TemplatePrivilegedTest, RemoveRefusesATemplateInUse) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (mount)";
  auto d = TempDir::Make("hangar-tmplp-");
  ASSERT_TRUE(d.ok());
  auto store = TemplateStore::Open({.root = d->path() + "/templates"});
  ASSERT_TRUE(store.ok());
  testing::TarBuilder(d->path() + "/r.tar").Dir("etc").File("etc/x", "1");
  auto t = store->ImportTarball("busy", d->path() + "/r.tar");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_TRUE(MakeDirs(d->path() + "/sandbox-root").ok());
  {
    // What the runtime does with a template: a read-only view of its rootfs.
    auto m = ScopedMount::Mount(t->rootfs, d->path() + "/sandbox-root", "", MS_BIND);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    Status st = store->Remove("busy");
    EXPECT_EQ(st.code(), Code::kFailedPrecondition);
    EXPECT_THAT(st.message(), ::testing::HasSubstr("template 'busy' is in use by 1 mount(s)"));
    EXPECT_TRUE(store->Get("busy").ok());
  }
  EXPECT_TRUE(store->Remove("busy").ok());
}

}  // namespace
}  // namespace hangar::storage
