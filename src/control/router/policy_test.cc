#include <atomic>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "hangar/base/tempdir.h"
#include "hangar/control/policy.h"

namespace hangar::control {
namespace {

constexpr std::string_view kPolicy = R"(version: 1
default: shared
rules:
  - name: payments-isolated
    when: 'paths.exists(p, p.matches("services/payments/**"))'
    tier: isolated
  - name: docs-shared
    when: 'paths.all(p, p.endsWith(".md"))'
    tier: shared
  - name: egress-hardened
    when: size(egress) > 0
    tier: hardened
  - name: prod-secrets-never-shared
    when: 'secrets.exists(s, s.matches("prod/**"))'
    forbid: [shared]
)";

Policy MustParse(std::string_view text) {
  auto p = Policy::Parse(text, "test.yaml");
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  return p.ok() ? std::move(*p) : Policy::Builtin(Tier::kIsolated);
}

std::string ParseError(std::string_view text) {
  auto p = Policy::Parse(text, "test.yaml");
  EXPECT_FALSE(p.ok()) << text;
  return p.ok() ? "" : p.status().message();
}

TaskFacts Facts(std::vector<std::string> paths, std::vector<std::string> secrets = {},
                std::vector<std::string> egress = {}) {
  TaskFacts f;
  f.paths = std::move(paths);
  f.secrets = std::move(secrets);
  f.egress = std::move(egress);
  return f;
}

TEST(PolicyTest, FirstMatchingTierRuleDecidesWithWitness) {
  const Policy p = MustParse(kPolicy);
  ASSERT_EQ(p.rules().size(), 4u);
  const Decision d = p.Decide(Facts({"README.md", "services/payments/api.go"}));
  EXPECT_EQ(d.tier, Tier::kIsolated);
  EXPECT_EQ(d.rule, "payments-isolated");
  EXPECT_EQ(d.explanation,
            "rule 'payments-isolated' matched: paths[1]=\"services/payments/api.go\" matches "
            "\"services/payments/**\" -> isolated");
  EXPECT_EQ(d.policy_version, p.version());
  EXPECT_FALSE(d.failed_closed);
  ASSERT_EQ(d.trace.size(), 4u);
  EXPECT_EQ(d.trace[0]["outcome"], "matched");
  EXPECT_EQ(d.trace[0]["witness"],
            "paths[1]=\"services/payments/api.go\" matches \"services/payments/**\"");
  EXPECT_EQ(d.trace[1]["outcome"], "skipped");  // after the first match
  EXPECT_EQ(d.trace[2]["outcome"], "skipped");
  EXPECT_EQ(d.trace[3]["outcome"], "not_matched");  // forbids always run
  EXPECT_EQ(d.trace[3]["kind"], "forbid");

  const Decision e = p.Decide(Facts({"a.go"}, {}, {"pypi.org:443"}));
  EXPECT_EQ(e.tier, Tier::kHardened);
  EXPECT_EQ(e.rule, "egress-hardened");
  EXPECT_EQ(e.trace[0]["outcome"], "not_matched");
  EXPECT_EQ(e.trace[1]["outcome"], "not_matched");
  EXPECT_EQ(e.trace[2]["outcome"], "matched");
}

TEST(PolicyTest, DefaultWhenNothingMatches) {
  const Policy p = MustParse(kPolicy);
  const Decision d = p.Decide(Facts({"src/main.go"}));
  EXPECT_EQ(d.tier, Tier::kShared);
  EXPECT_EQ(d.rule, "default");
  EXPECT_EQ(d.explanation, "no rule matched: default shared");
}

TEST(PolicyTest, ForbidWinsOverAnEarlierTierRule) {
  const Policy p = MustParse(kPolicy);
  // docs-shared matches first and says shared; the forbid, listed later, still wins.
  const Decision d = p.Decide(Facts({"README.md"}, {"prod/db/password"}));
  EXPECT_EQ(d.tier, Tier::kHardened);
  EXPECT_EQ(d.rule, "prod-secrets-never-shared");
  EXPECT_EQ(d.explanation,
            "rule 'docs-shared' matched: all 1 of paths satisfy p.endsWith(\".md\") -> shared; "
            "forbid 'prod-secrets-never-shared' matched: secrets[0]=\"prod/db/password\" matches "
            "\"prod/**\" -> not on shared; raised shared -> hardened");
  // A forbid that matches but does not bite leaves the tier and the deciding rule alone.
  const Decision e = p.Decide(Facts({"services/payments/x"}, {"prod/db"}));
  EXPECT_EQ(e.tier, Tier::kIsolated);
  EXPECT_EQ(e.rule, "payments-isolated");
  EXPECT_NE(e.explanation.find("forbid 'prod-secrets-never-shared' matched"), std::string::npos);
}

TEST(PolicyTest, SeveralForbidsStackUp) {
  const Policy p = MustParse(R"(version: 1
default: shared
rules:
  - name: a
    when: 'secrets.exists(s, s.startsWith("prod/"))'
    forbid: [shared]
  - name: b
    when: size(egress) > 0
    forbid: [hardened]
)");
  EXPECT_EQ(p.Decide(Facts({}, {"prod/x"})).tier, Tier::kHardened);
  EXPECT_EQ(p.Decide(Facts({}, {}, {"x:1"})).tier, Tier::kShared);  // hardened forbidden only
  const Decision both = p.Decide(Facts({}, {"prod/x"}, {"x:1"}));
  EXPECT_EQ(both.tier, Tier::kIsolated);
  EXPECT_EQ(both.rule, "b");
  EXPECT_NE(both.explanation.find("raised shared -> isolated"), std::string::npos);
}

TEST(PolicyTest, RequestedTierOnlyRaises) {
  const Policy p = MustParse(kPolicy);
  TaskFacts up = Facts({"src/x.go"});
  up.requested_tier = Tier::kHardened;
  const Decision d = p.Decide(up);
  EXPECT_EQ(d.tier, Tier::kHardened);
  EXPECT_EQ(d.rule, "requested");
  EXPECT_EQ(d.explanation,
            "no rule matched: default shared; requested tier hardened raises it to hardened");

  TaskFacts down = Facts({"services/payments/x.go"});
  down.requested_tier = Tier::kShared;
  const Decision e = p.Decide(down);
  EXPECT_EQ(e.tier, Tier::kIsolated);
  EXPECT_EQ(e.rule, "payments-isolated");
  EXPECT_NE(e.explanation.find("requested tier shared ignored"), std::string::npos);

  // A request onto a forbidden tier is raised past it as well.
  const Policy q = MustParse(R"(version: 1
default: shared
rules:
  - name: no-hardened
    when: 'true'
    forbid: [hardened]
)");
  TaskFacts h;
  h.requested_tier = Tier::kHardened;
  EXPECT_EQ(q.Decide(h).tier, Tier::kIsolated);
  EXPECT_EQ(q.Decide(TaskFacts{}).tier, Tier::kShared);
}

TEST(PolicyTest, FailsClosedOnEvaluationError) {
  const Policy p = MustParse(R"(version: 1
default: shared
rules:
  - name: by-label-glob
    when: 'paths.exists(p, p.matches(labels.pattern))'
    tier: shared
  - name: never-reached
    when: 'true'
    tier: shared
)");
  TaskFacts f = Facts({"a/b"});
  f.labels["pattern"] = "[oops";
  const Decision d = p.Decide(f);
  EXPECT_EQ(d.tier, Tier::kIsolated);
  EXPECT_TRUE(d.failed_closed);
  EXPECT_EQ(d.rule, "by-label-glob");
  EXPECT_EQ(d.explanation,
            "rule 'by-label-glob' failed to evaluate (invalid glob \"[oops\": unclosed '[' at "
            "offset 0); failing closed to isolated");
  EXPECT_EQ(d.trace[0]["outcome"], "error");
  EXPECT_EQ(d.trace[1]["outcome"], "skipped");
  const Verdict v = p.Route(f);
  EXPECT_EQ(v.tier, Tier::kIsolated);
  EXPECT_EQ(v.failed_rule, 0);
}

TEST(PolicyTest, FailsClosedOnBudgetExhaustion) {
  // The expensive rule is a forbid of shared only: without fail-closed the task would be
  // hardened at most; exhausting the budget makes it isolated.
  const Policy p = MustParse(R"(version: 1
default: shared
rules:
  - name: cross-product
    when: 'paths.exists(a, paths.exists(b, a != b && a.matches("**/x/**/y/**/z")))'
    forbid: [shared]
)");
  TaskFacts f;
  for (int i = 0; i < 1000; ++i) f.paths.push_back("x/y/x/y/x/y/x/y/" + std::to_string(i));
  const Decision d = p.Decide(f);
  EXPECT_EQ(d.tier, Tier::kIsolated);
  EXPECT_TRUE(d.failed_closed);
  EXPECT_EQ(d.rule, "cross-product");
  EXPECT_NE(d.explanation.find("evaluation budget of 1000000 steps exhausted"), std::string::npos);
}

TEST(PolicyTest, ShippedExamplePolicy) {
  auto p = Policy::LoadFile(HANGAR_EXAMPLE_POLICY);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->default_tier(), Tier::kShared);
  EXPECT_EQ(p->Decide(Facts({"services/payments/api.go"})).tier, Tier::kIsolated);
  EXPECT_EQ(p->Decide(Facts({"services/auth/login.go"})).tier, Tier::kIsolated);
  EXPECT_EQ(p->Decide(Facts({"src/app.py"}, {"prod/db/password"})).tier, Tier::kIsolated);
  EXPECT_EQ(p->Decide(Facts({"src/app.py"}, {"staging/db"})).tier, Tier::kHardened);
  EXPECT_EQ(p->Decide(Facts({"src/app.py"}, {}, {"pypi.org:443"})).tier, Tier::kHardened);
  EXPECT_EQ(p->Decide(Facts({"infra/prod/main.tf"})).tier, Tier::kHardened);
  EXPECT_EQ(p->Decide(Facts({"docs/guide.md"})).rule, "docs-only");
  EXPECT_EQ(p->Decide(Facts({"src/app.py"})).tier, Tier::kShared);
  TaskFacts high;
  high.labels["sensitivity"] = "high";
  EXPECT_EQ(p->Decide(high).tier, Tier::kIsolated);
  TaskFacts red;
  red.team = "red-team";
  EXPECT_EQ(p->Decide(red).rule, "security-research");
  TaskFacts fork;
  fork.metadata["pr_from_fork"] = "true";
  EXPECT_EQ(p->Decide(fork).tier, Tier::kHardened);
}

TEST(PolicyParseTest, ErrorsPointIntoTheFile) {
  EXPECT_EQ(ParseError("version: 1\nrules: []\n"),
            "test.yaml:1:1: missing 'default': the tier for tasks no rule matches is mandatory");
  EXPECT_EQ(ParseError("version: 1\ndefault: gold\n"),
            "test.yaml:2:10: 'default': unknown tier 'gold' (valid: shared, hardened, isolated)");
  EXPECT_EQ(ParseError("default: shared\n"),
            "test.yaml:1:1: missing 'version' (this router reads version: 1)");
  EXPECT_EQ(ParseError("version: 2\ndefault: shared\n"),
            "test.yaml:1:10: unsupported 'version' (this router reads version: 1)");
  EXPECT_EQ(ParseError("version: 1\ndefault: shared\nrulez: []\n"),
            "test.yaml:3:1: policy: unknown key 'rulez' (allowed: default, rules, version)");
  EXPECT_EQ(ParseError("version: 1\ndefault: shared\nrules:\n  - name: a\n    when: 'true'\n"
                       "    tier: shared\n    priority: 3\n"),
            "test.yaml:7:5: rules[0]: unknown key 'priority' (allowed: description, forbid, name, "
            "tier, when)");
  EXPECT_EQ(ParseError("version: 1\ndefault: shared\nrules:\n  - name: a\n    when: 'true'\n"
                       "    tier: shared\n  - name: a\n    when: 'true'\n    tier: isolated\n"),
            "test.yaml:7:11: duplicate rule name 'a' (first at line 4)");
  EXPECT_EQ(ParseError("version: 1\ndefault: shared\nrules:\n  - name: a\n    when: 'true'\n"
                       "    tier: platinum\n"),
            "test.yaml:6:11: rule 'a': 'tier': unknown tier 'platinum' (valid: shared, hardened, "
            "isolated)");
  EXPECT_EQ(ParseError("version: 1\ndefault: shared\nrules:\n  - name: a\n    when: 'true'\n"
                       "    forbid: [shared, hardened, isolated]\n"),
            "test.yaml:6:32: rule 'a': 'forbid' cannot name 'isolated': it is the strongest tier, "
            "where every task must always be able to go (the router only raises tiers)");
  EXPECT_EQ(ParseError("version: 1\ndefault: shared\nrules:\n  - name: a\n    when: 'true'\n"
                       "    forbid: []\n"),
            "test.yaml:6:13: rule 'a': 'forbid' must be a non-empty list of tiers, e.g. [shared]");
  EXPECT_EQ(ParseError("version: 1\ndefault: shared\nrules:\n  - name: a\n    when: 'true'\n"
                       "    tier: shared\n    forbid: [shared]\n"),
            "test.yaml:7:13: rule 'a': has both 'tier' and 'forbid'; a rule is one or the other");
  EXPECT_EQ(ParseError("version: 1\ndefault: shared\nrules:\n  - name: a\n    when: 'true'\n"),
            "test.yaml:4:5: rule 'a': needs 'tier' or 'forbid'");
  EXPECT_EQ(ParseError("version: 1\ndefault: shared\nrules:\n  - name: a\n    tier: shared\n"),
            "test.yaml:4:5: rule 'a': missing 'when' (use when: 'true' to always match)");
  EXPECT_EQ(ParseError("version: 1\ndefault: shared\nrules:\n  - name: default\n    when: 'true'\n"
                       "    tier: shared\n"),
            "test.yaml:4:11: rule 'default': the name is reserved (decisions use it)");
  EXPECT_EQ(ParseError("version: 1\ndefault: shared\nrules:\n  - name: 'a b'\n    when: 'true'\n"
                       "    tier: shared\n"),
            "test.yaml:4:11: rules[0]: 'name' must be letters, digits, '-', '_' or '.', starting "
            "with a letter or digit");
  EXPECT_EQ(ParseError("version: 1\ndefault: [shared\n"),
            "test.yaml:3:1: invalid YAML: end of sequence flow not found");
  EXPECT_EQ(ParseError("- a\n- b\n"),
            "test.yaml:1:1: a policy must be a YAML mapping with version, default and rules");
}

TEST(PolicyParseTest, ExpressionErrorsPointAtTheCharacter) {
  // Plain scalar: column of the scalar + offset in the expression.
  EXPECT_EQ(ParseError("version: 1\ndefault: shared\nrules:\n  - name: a\n"
                       "    when: size(egress) > 0 && team = \"x\"\n    tier: shared\n"),
            "test.yaml:5:36: rule 'a': in 'when': '=' is not an operator; did you mean '=='?");
  // Single-quoted: one more for the quote.
  EXPECT_EQ(ParseError("version: 1\ndefault: shared\nrules:\n  - name: a\n"
                       "    when: 'paths.exists(p, p.matches(\"src/[abc\"))'\n    tier: shared\n"),
            "test.yaml:5:38: rule 'a': in 'when': invalid glob \"src/[abc\": unclosed '[' at "
            "offset 4");
  // Literal block: the line inside the block and its indentation.
  EXPECT_EQ(ParseError("version: 1\ndefault: shared\nrules:\n  - name: a\n    when: |\n"
                       "      team == \"x\" ||\n        bogus\n    tier: shared\n"),
            "test.yaml:7:9: rule 'a': in 'when': unknown identifier 'bogus' (known: team, repo, "
            "template, labels, metadata, paths, secrets, egress)");
  // Folded (newlines kept before more-indented lines): the scalar, and the position inside
  // the expression.
  EXPECT_EQ(ParseError("version: 1\ndefault: shared\nrules:\n  - name: a\n    when: >-\n"
                       "      team == \"x\" ||\n        bogus\n    tier: shared\n"),
            "test.yaml:5:11: rule 'a': in 'when' at 2:3 of the expression: unknown identifier "
            "'bogus' (known: team, repo, template, labels, metadata, paths, secrets, egress)");
}

TEST(PolicyTest, VersionIsAHashOfTheText) {
  const Policy a = MustParse(kPolicy);
  const Policy b = MustParse(std::string(kPolicy) + "# a comment\n");
  EXPECT_EQ(a.version().size(), 12u);
  EXPECT_NE(a.version(), b.version());
  EXPECT_EQ(a.version(), MustParse(kPolicy).version());
}

void WriteFile(const std::string& path, std::string_view text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  ASSERT_TRUE(out.good());
}

TEST(PolicyStoreTest, ReloadKeepsTheOldPolicyOnABadFile) {
  auto dir = TempDir::Make("router-test-");
  ASSERT_TRUE(dir.ok());
  const std::string path = dir->path() + "/policy.yaml";
  WriteFile(path, kPolicy);
  auto first = Policy::LoadFile(path);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  PolicyStore store(std::move(*first));
  const auto before = store.Current();
  EXPECT_EQ(store.Decide(Facts({"services/payments/x"})).tier, Tier::kIsolated);

  WriteFile(path,
            "version: 1\ndefault: shared\nrules:\n  - name: a\n    when: 'team =='\n"
            "    tier: isolated\n");
  const Status bad = store.ReloadFromFile(path);
  EXPECT_EQ(bad.code(), Code::kInvalidArgument);
  EXPECT_EQ(bad.message(), path +
                               ":5:19: rule 'a': in 'when': expected a value, got end of "
                               "expression");
  EXPECT_EQ(store.Current(), before);
  EXPECT_EQ(store.Decide(Facts({"services/payments/x"})).tier, Tier::kIsolated);

  const Status missing = store.ReloadFromFile(dir->path() + "/nope.yaml");
  EXPECT_EQ(missing.code(), Code::kNotFound);
  EXPECT_EQ(store.Current(), before);

  WriteFile(path, "version: 1\ndefault: hardened\n");
  ASSERT_TRUE(store.ReloadFromFile(path).ok());
  EXPECT_NE(store.Current()->version(), before->version());
  EXPECT_EQ(store.Decide(Facts({"services/payments/x"})).tier, Tier::kHardened);
  // A reader holding the old snapshot still decides with it.
  EXPECT_EQ(before->Decide(Facts({"services/payments/x"})).tier, Tier::kIsolated);
}

TEST(PolicyStoreTest, ConcurrentReadersDuringReloads) {
  PolicyStore store(MustParse(kPolicy));
  std::atomic<bool> stop{false};
  std::atomic<int64_t> wrong{0};
  std::thread reader([&] {
    while (!stop.load()) {
      const Decision d = store.Decide(Facts({"services/payments/x"}));
      if (d.tier != Tier::kIsolated) ++wrong;
    }
  });
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(
        store.ReloadFromText(std::string(kPolicy) + "# " + std::to_string(i) + "\n", "mem").ok());
  }
  stop = true;
  reader.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST(RouteTestTest, CountsTiersAndRules) {
  const Policy p = MustParse(kPolicy);
  std::istringstream in(R"({"paths": ["services/payments/a.go"]}
{"paths": ["README.md"]}

{"paths": ["src/x.go"], "egress": ["pypi.org:443"]}
{"paths": ["src/x.go"]}
{"paths": ["src/x.go"], "tier": "hardened"}
{"paths": ["README.md"], "secrets": ["prod/k"]}
)");
  auto r = RouteTest(p, in);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->tasks, 6);
  EXPECT_EQ(r->by_tier[0], 2);  // README.md, src/x.go
  EXPECT_EQ(r->by_tier[1], 3);  // egress, requested, forbid-raised
  EXPECT_EQ(r->by_tier[2], 1);
  EXPECT_EQ(r->raised_by_request, 1);
  EXPECT_EQ(r->raised_by_forbid, 1);
  EXPECT_EQ(r->failed_closed, 0);
  const std::vector<std::pair<std::string, int64_t>> want = {
      {"payments-isolated", 1},         {"docs-shared", 1}, {"egress-hardened", 1},
      {"prod-secrets-never-shared", 1}, {"default", 1},     {"requested", 1}};
  EXPECT_EQ(r->by_rule, want);
  const std::string table = FormatRouteTest(*r);
  EXPECT_NE(table.find("hardened          3   50.0%"), std::string::npos) << table;
  EXPECT_NE(table.find("payments-isolated                1   16.7%"), std::string::npos) << table;
  const nlohmann::json j = RouteTestJson(*r);
  EXPECT_EQ(j["tasks"], 6);
  EXPECT_EQ(j["tiers"]["hardened"]["tasks"], 3);
  EXPECT_DOUBLE_EQ(j["tiers"]["hardened"]["share"].get<double>(), 0.5);
  EXPECT_EQ(j["rules"][0]["rule"], "payments-isolated");
}

TEST(RouteTestTest, ErrorsNameTheLine) {
  const Policy p = MustParse(kPolicy);
  std::istringstream bad_json("{\"paths\": []}\n\n{oops\n");
  auto r = RouteTest(p, bad_json);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "line 3: not valid JSON");
  std::istringstream bad_field("{\"paths\": []}\n{\"path\": [\"x\"]}\n");
  auto s = RouteTest(p, bad_field);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().message(),
            "line 2: unknown field 'path' (the router reads team, repo, template, labels, "
            "metadata, paths, secrets, egress, tier)");
  std::istringstream empty("");
  auto e = RouteTest(p, empty);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->tasks, 0);
  EXPECT_NE(FormatRouteTest(*e).find("shared            0       -"), std::string::npos);
}

}  // namespace
}  // namespace hangar::control
