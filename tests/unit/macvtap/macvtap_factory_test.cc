// SPDX-License-Identifier: GPL-2.0-or-later
#include "macvtap/macvtap_factory.h"

#include <gtest/gtest.h>
#include <sys/sysmacros.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string_view>

#include "macvtap/tap_device.h"

namespace relink::macvtap {
namespace {

namespace fs = std::filesystem;

TEST(MacvtapMode, NamesRoundTrip) {
  for (Mode m : {Mode::Vepa, Mode::Bridge, Mode::Private, Mode::Passthru}) {
    auto parsed = parse_mode(mode_name(m));
    ASSERT_TRUE(parsed) << mode_name(m);
    EXPECT_EQ(*parsed, m);
  }
  EXPECT_STREQ(mode_name(Mode::Vepa), "vepa");
  EXPECT_STREQ(mode_name(Mode::Bridge), "bridge");
  EXPECT_STREQ(mode_name(Mode::Private), "private");
  EXPECT_STREQ(mode_name(Mode::Passthru), "passthru");
}

TEST(MacvtapMode, RejectsOtherSpellings) {
  for (const char* s :
       {"", "Bridge", "BRIDGE", " bridge", "bridge ", "source", "passthrough", "vepa\n"}) {
    EXPECT_FALSE(parse_mode(s)) << '"' << s << '"';
  }
}

TEST(MacvtapIfname, FollowsKernelRules) {
  EXPECT_TRUE(valid_ifname("rlk0"));
  EXPECT_TRUE(valid_ifname("a"));
  EXPECT_TRUE(valid_ifname("abcdefghijklmno"));    // 15 bytes
  EXPECT_FALSE(valid_ifname("abcdefghijklmnop"));  // 16 bytes
  for (const char* s : {"", ".", "..", "a/b", "a:b", "a b", "a\tb", "a\nb"}) {
    EXPECT_FALSE(valid_ifname(s)) << '"' << s << '"';
  }
  EXPECT_FALSE(valid_ifname(std::string("a\0b", 3)));
}

// A fake /sys/class/net under a temporary directory.
class FakeSysfs : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "relink-sysfs-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  // Writes NAME/macvtap/tapIFINDEX/dev with exactly `content`.
  void write_dev(const std::string& name, int ifindex, const std::string& content) {
    fs::path dir = root_ / name / "macvtap" / ("tap" + std::to_string(ifindex));
    fs::create_directories(dir);
    std::ofstream(dir / "dev", std::ios::binary) << content;
  }
  Result<dev_t> read(const std::string& name, int ifindex) {
    return read_macvtap_dev(root_.string(), name, ifindex);
  }

  fs::path root_;
};

TEST_F(FakeSysfs, ReadsValidDeviceNumber) {
  write_dev("rlk0", 7, "246:3\n");
  auto dev = read("rlk0", 7);
  ASSERT_TRUE(dev) << dev.error().message;
  EXPECT_EQ(major(*dev), 246u);
  EXPECT_EQ(minor(*dev), 3u);
}

TEST_F(FakeSysfs, ReadsLargestKernelNumbers) {
  write_dev("rlk0", 7, "4095:1048575\n");
  auto dev = read("rlk0", 7);
  ASSERT_TRUE(dev) << dev.error().message;
  EXPECT_EQ(major(*dev), 4095u);
  EXPECT_EQ(minor(*dev), 1048575u);
}

TEST_F(FakeSysfs, MissingIsENOENT) {
  auto dev = read("rlk0", 7);
  ASSERT_FALSE(dev);
  EXPECT_EQ(dev.error().code, ENOENT);
  EXPECT_NE(dev.error().message.find("rlk0"), std::string::npos) << dev.error().message;
}

TEST_F(FakeSysfs, OtherIfindexIsNotRead) {
  // The path names the ifindex: a same-named device with another ifindex
  // (another namespace's view) must not be taken.
  write_dev("rlk0", 8, "246:3\n");
  auto dev = read("rlk0", 7);
  ASSERT_FALSE(dev);
  EXPECT_EQ(dev.error().code, ENOENT);
}

TEST_F(FakeSysfs, MissingSysfsDirIsError) {
  auto dev = read_macvtap_dev((root_ / "nope").string(), "rlk0", 7);
  ASSERT_FALSE(dev);
  EXPECT_EQ(dev.error().code, ENOENT);
}

TEST_F(FakeSysfs, RejectsMalformedContent) {
  using namespace std::literals;
  const std::string_view bad[] = {
      ""sv,                 // empty
      "\n"sv,               // nothing
      "246:3"sv,            // no newline
      "246:3\n\n"sv,        // trailing junk
      "246:3 \n"sv,         // trailing space
      "246:3\r\n"sv,        // CRLF
      " 246:3\n"sv,         // leading space
      "garbage\n"sv,        // not numbers
      "246\n"sv,            // no minor
      "246:\n"sv,           // empty minor
      ":3\n"sv,             // empty major
      "246:3:1\n"sv,        // three fields
      "-1:3\n"sv,           // sign
      "+246:3\n"sv,         // sign
      "0x10:3\n"sv,         // hex
      "2\00046:3\n"sv,      // embedded NUL
      "4096:0\n"sv,         // major beyond 12 bits
      "1:1048576\n"sv,      // minor beyond 20 bits
      "99999999999:1\n"sv,  // beyond 32 bits
      "1:99999999999999999999999\n"sv,
  };
  int ifindex = 1;
  for (std::string_view text : bad) {
    write_dev("rlk0", ifindex, std::string(text));
    auto dev = read("rlk0", ifindex);
    EXPECT_FALSE(dev) << "accepted \"" << text << "\"";
    if (!dev) {
      EXPECT_EQ(dev.error().code, EINVAL) << dev.error().message;
    }
    ++ifindex;
  }
}

TEST_F(FakeSysfs, RejectsOverlongFile) {
  write_dev("rlk0", 7, std::string(4096, '1') + ":3\n");
  auto dev = read("rlk0", 7);
  ASSERT_FALSE(dev);
  EXPECT_EQ(dev.error().code, EINVAL);
  EXPECT_LT(dev.error().message.size(), 200u) << "error should not echo the whole file";
}

TEST_F(FakeSysfs, RejectsNamesThatLeaveTheTree) {
  write_dev("rlk0", 7, "246:3\n");
  for (const char* name : {"", ".", "..", "../rlk0", "rlk0/../rlk0", "abcdefghijklmnopq"}) {
    auto dev = read(name, 7);
    ASSERT_FALSE(dev) << name;
    EXPECT_EQ(dev.error().code, EINVAL) << name;
  }
  auto dev = read("rlk0", 0);
  ASSERT_FALSE(dev);
  EXPECT_EQ(dev.error().code, EINVAL);
}

}  // namespace
}  // namespace relink::macvtap
