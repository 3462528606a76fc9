#include "hangar/base/config.h"

#include <gtest/gtest.h>

namespace hangar {
namespace {

ConfigSchema TestSchema() {
  ConfigSchema s;
  s.Add({.key = "listen", .default_value = "127.0.0.1:7070", .help = "address"});
  s.Add({.key = "http.threads",
         .type = OptionType::kInt,
         .default_value = "2",
         .help = "t",
         .min = 1,
         .max = 64});
  s.Add({.key = "http.access_log", .type = OptionType::kBool, .default_value = "true"});
  s.Add({.key = "log.format",
         .type = OptionType::kEnum,
         .default_value = "text",
         .choices = {"text", "json"}});
  return s;
}

TEST(ConfigTest, NamesDerivedFromKey) {
  ConfigOption o{.key = "http.max_body_bytes"};
  EXPECT_EQ(o.EnvName(), "HANGAR_HTTP_MAX_BODY_BYTES");
  EXPECT_EQ(o.FlagName(), "--http-max-body-bytes");
}

TEST(ConfigTest, DefaultsWhenNothingGiven) {
  auto c = ResolveConfig(TestSchema(), {});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->GetString("listen"), "127.0.0.1:7070");
  EXPECT_EQ(c->GetInt("http.threads"), 2);
  EXPECT_TRUE(c->GetBool("http.access_log"));
  EXPECT_EQ(c->SourceOf("listen"), ConfigSource::kDefault);
}

TEST(ConfigTest, PrecedenceFlagOverEnvOverFileOverDefault) {
  ConfigInputs in;
  in.file_text = "listen: 127.0.0.1:1\nhttp:\n  threads: 3\n  access_log: false\n";
  in.env = {{"HANGAR_HTTP_THREADS", "5"}, {"HANGAR_LISTEN", "127.0.0.1:2"}};
  in.flags = {{"listen", "127.0.0.1:3"}};
  auto c = ResolveConfig(TestSchema(), in);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->GetString("listen"), "127.0.0.1:3");
  EXPECT_EQ(c->SourceOf("listen"), ConfigSource::kFlag);
  EXPECT_EQ(c->GetInt("http.threads"), 5);
  EXPECT_EQ(c->SourceOf("http.threads"), ConfigSource::kEnv);
  EXPECT_FALSE(c->GetBool("http.access_log"));
  EXPECT_EQ(c->SourceOf("http.access_log"), ConfigSource::kFile);
  EXPECT_EQ(c->SourceOf("log.format"), ConfigSource::kDefault);
  EXPECT_NE(c->Describe().find("http.threads = 5 (env)"), std::string::npos);
}

TEST(ConfigTest, UnknownFileKeyNamesLineAndColumn) {
  ConfigInputs in;
  in.file_name = "hangar.yaml";
  in.file_text = "listen: 127.0.0.1:1\nhttp:\n  thread: 3\n";
  auto c = ResolveConfig(TestSchema(), in);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(), "hangar.yaml:3:3: unknown key 'http.thread'");
}

TEST(ConfigTest, BadValuesNameTheirSource) {
  ConfigInputs file;
  file.file_name = "c.yaml";
  file.file_text = "http:\n  threads: 100\n";
  auto c = ResolveConfig(TestSchema(), file);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(), "c.yaml:2:12: http.threads must be between 1 and 64");

  ConfigInputs env;
  env.env = {{"HANGAR_HTTP_THREADS", "many"}};
  c = ResolveConfig(TestSchema(), env);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(), "HANGAR_HTTP_THREADS='many': http.threads must be an integer");

  ConfigInputs flag;
  flag.flags = {{"log.format", "xml"}};
  c = ResolveConfig(TestSchema(), flag);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(), "--log-format xml: log.format must be one of: text, json");
}

TEST(ConfigTest, MalformedYamlIsRejectedWithPosition) {
  ConfigInputs in;
  in.file_name = "c.yaml";
  in.file_text = "http: [unclosed\n";
  auto c = ResolveConfig(TestSchema(), in);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(c.status().message().rfind("c.yaml:", 0), 0u) << c.status().message();
}

TEST(ConfigTest, NonMappingTopLevelRejected) {
  ConfigInputs in;
  in.file_text = "- a\n- b\n";
  EXPECT_FALSE(ResolveConfig(TestSchema(), in).ok());
  in.file_text = "listen: [a, b]\n";
  auto c = ResolveConfig(TestSchema(), in);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("'listen' must be a single value"), std::string::npos);
}

TEST(ConfigTest, EmptyFileMeansDefaults) {
  ConfigInputs in;
  in.file_text = "";
  auto c = ResolveConfig(TestSchema(), in);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->GetInt("http.threads"), 2);
}

}  // namespace
}  // namespace hangar
