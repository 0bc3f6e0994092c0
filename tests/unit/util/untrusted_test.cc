// SPDX-License-Identifier: GPL-2.0-or-later
// The door for peer bytes: bounded parsing and safe text.
#include "util/untrusted.h"

#include <gtest/gtest.h>

namespace relink::untrusted {
namespace {

bool valid_utf8(const std::string& s) {
  try {
    (void)nlohmann::json(s).dump();
    return true;
  } catch (const nlohmann::json::type_error&) {
    return false;
  }
}

TEST(ParseJson, AcceptsWhatQemuSends) {
  auto r = parse_json(R"({"return": {"a": [1, 2.5, "x", null, true]}, "id": 3})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ((*r)["id"], 3);
  EXPECT_EQ((*r)["return"]["a"][2], "x");
}

TEST(ParseJson, NumbersOutOfRangeAreAnErrorNotAnException) {
  for (const char* text : {R"({"QMP": 1e400})", "-1e999", "[1E+99999]"}) {
    auto r = parse_json(text);
    ASSERT_FALSE(r) << text;
    EXPECT_NE(r.error().message.find("number out of range"), std::string::npos) << r.error().message;
  }
  // Big integers that do not fit 64 bits become doubles, as JSON allows.
  EXPECT_TRUE(parse_json("123456789012345678901234567890"));
}

TEST(ParseJson, NestingIsBounded) {
  EXPECT_TRUE(parse_json(std::string(64, '[') + std::string(64, ']')));
  auto r = parse_json(std::string(65, '[') + std::string(65, ']'));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "JSON nested deeper than 64 levels");
  // 60,000 levels: refused before anything recursive sees it.
  std::string deep;
  for (int i = 0; i < 60000; ++i) deep += R"({"a":)";
  deep += "1" + std::string(60000, '}');
  EXPECT_FALSE(parse_json(deep));
  EXPECT_FALSE(parse_json(std::string(100000, '[')));
  EXPECT_TRUE(parse_json("[[1]]", {.max_bytes = 100, .max_depth = 2}));
  EXPECT_FALSE(parse_json("[[[1]]]", {.max_bytes = 100, .max_depth = 2}));
}

TEST(ParseJson, SizeIsBounded) {
  auto r = parse_json(std::string(2000, ' ') + "1", {.max_bytes = 1000, .max_depth = 4});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("over 1000 bytes"), std::string::npos);
}

TEST(ParseJson, InvalidInputGivesASafeMessage) {
  for (const std::string& text : {std::string("{\"a\": \"\xff\xfe\"}"), std::string("{\"a\": \"x\0y\"}", 12),
                                 std::string("{\"a\":"), std::string("\xc3"), std::string("nul")}) {
    auto r = parse_json(text);
    ASSERT_FALSE(r);
    EXPECT_TRUE(valid_utf8(r.error().message)) << r.error().message;
    EXPECT_LT(r.error().message.size(), 300u);
  }
}

TEST(DumpJson, NeverThrows) {
  nlohmann::json j = {{"bad", std::string("\xff\xfe", 2)}};
  EXPECT_NO_THROW((void)dump_json(j));
  EXPECT_EQ(dump_json(j), "{\"bad\":\"\xef\xbf\xbd\xef\xbf\xbd\"}");
}

TEST(SafeText, KeepsValidUtf8AndEscapesTheRest) {
  EXPECT_EQ(safe_text("plain text"), "plain text");
  EXPECT_EQ(safe_text("é ü 😀"), "é ü 😀");
  EXPECT_EQ(safe_text(std::string("a\0b", 3)), "a\\x00b");
  EXPECT_EQ(safe_text("line\nnext\ttab\\"), "line\\nnext\\ttab\\\\");
  EXPECT_EQ(safe_text("\x1b[31mred"), "\\x1b[31mred");
  EXPECT_EQ(safe_text("\xff\xfe"), "\\xff\\xfe");
  EXPECT_EQ(safe_text("\xc0\xaf"), "\\xc0\\xaf");          // overlong '/'
  EXPECT_EQ(safe_text("\xed\xa0\x80"), "\\xed\\xa0\\x80");  // a surrogate
  EXPECT_EQ(safe_text("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");  // past U+10FFFF
  EXPECT_EQ(safe_text("\xc3"), "\\xc3");                   // cut short
}

TEST(SafeText, CutsAtACharacterBoundary) {
  std::string accents;
  for (int i = 0; i < 100; ++i) accents += "é";
  const std::string cut = safe_text(accents, 121);
  EXPECT_TRUE(valid_utf8(cut));
  EXPECT_EQ(cut, accents.substr(0, 120) + "...");
  EXPECT_EQ(safe_text("abcdef", 3), "abc...");
  EXPECT_EQ(safe_text("ab\n", 3), "ab...");  // an escape is never split
  for (size_t n = 0; n < 20; ++n) EXPECT_LE(safe_text(std::string(50, '\x01'), n).size(), n + 3);
}

}  // namespace
}  // namespace relink::untrusted
