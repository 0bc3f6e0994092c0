// SPDX-License-Identifier: GPL-2.0-or-later
#include "qemu/qmp_framer.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace relink::qemu {
namespace {

std::vector<std::string> drain(QmpFramer& f) {
  std::vector<std::string> out;
  while (auto line = f.next_line()) out.push_back(*line);
  return out;
}

TEST(QmpFramer, SplitsLinesAndStripsCrlf) {
  QmpFramer f(1024);
  ASSERT_TRUE(f.append("{\"a\":1}\r\n{\"b\":2}\n{\"c\":"));
  EXPECT_EQ(drain(f), (std::vector<std::string>{"{\"a\":1}", "{\"b\":2}"}));
  EXPECT_EQ(f.buffered_bytes(), 5u);  // the partial {"c":
  ASSERT_TRUE(f.append("3}\r\n"));
  EXPECT_EQ(drain(f), (std::vector<std::string>{"{\"c\":3}"}));
  EXPECT_EQ(f.buffered_bytes(), 0u);
}

TEST(QmpFramer, LineSplitAcrossManyReadsEvenBetweenCrAndLf) {
  const std::string stream = "{\"return\": {}, \"id\": 7}\r\n{\"event\": \"STOP\"}\r\n";
  // Every possible split point, and byte-at-a-time.
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    QmpFramer f(1024);
    ASSERT_TRUE(f.append(stream.substr(0, cut)));
    ASSERT_TRUE(f.append(stream.substr(cut)));
    EXPECT_EQ(drain(f), (std::vector<std::string>{"{\"return\": {}, \"id\": 7}", "{\"event\": \"STOP\"}"}))
        << "cut at " << cut;
  }
  QmpFramer f(1024);
  for (char c : stream) ASSERT_TRUE(f.append(std::string(1, c)));
  EXPECT_EQ(drain(f).size(), 2u);
}

TEST(QmpFramer, LinesComeOutOneAtATimeInOrder) {
  QmpFramer f(64);
  ASSERT_TRUE(f.append("1\n2\n3\n"));
  EXPECT_EQ(f.next_line(), "1");
  ASSERT_TRUE(f.append("4\n"));
  EXPECT_EQ(drain(f), (std::vector<std::string>{"2", "3", "4"}));
  EXPECT_FALSE(f.next_line().has_value());
}

TEST(QmpFramer, LineOfExactlyTheLimitPassesOneMoreByteFails) {
  QmpFramer ok(8);
  ASSERT_TRUE(ok.append("12345678\r"));  // the '\r' may belong to "\r\n"
  ASSERT_TRUE(ok.append("\n"));
  EXPECT_EQ(drain(ok), (std::vector<std::string>{"12345678"}));

  QmpFramer complete(8);
  EXPECT_FALSE(complete.append("123456789\n"));
  EXPECT_TRUE(drain(complete).empty());

  QmpFramer partial(8);
  EXPECT_FALSE(partial.append("123456789"));  // no newline yet: fails as soon as it is too long

  QmpFramer cr_then_more(8);
  ASSERT_TRUE(cr_then_more.append("12345678\r"));
  EXPECT_FALSE(cr_then_more.append("x\n"));  // "12345678\rx" is 10 bytes
}

TEST(QmpFramer, HugeLineWithoutNewlineStaysBoundedAndSticks) {
  const size_t limit = 1 << 20;
  QmpFramer f(limit);
  ASSERT_TRUE(f.append("{\"event\": \"A\"}\r\n"));
  const std::string chunk(64 * 1024, 'x');
  size_t accepted = 0;
  bool failed = false;
  for (size_t sent = 0; sent < 10u << 20; sent += chunk.size()) {
    if (!f.append(chunk)) {
      failed = true;
      break;
    }
    accepted += chunk.size();
    ASSERT_LE(f.buffered_bytes(), limit + 1 + 16);  // the partial line plus the complete one
  }
  EXPECT_TRUE(failed);
  EXPECT_LE(accepted, limit);
  // The line completed before the overflow is still there; the garbage is not.
  EXPECT_EQ(f.next_line(), "{\"event\": \"A\"}");
  EXPECT_EQ(f.buffered_bytes(), 0u);
  // Once overflowed, nothing more is taken, even a newline.
  EXPECT_FALSE(f.append("\n{}\n"));
  EXPECT_FALSE(f.next_line().has_value());

  f.clear();
  ASSERT_TRUE(f.append("{}\n"));
  EXPECT_EQ(f.next_line(), "{}");
}

TEST(QmpFramer, EmptyLinesAreLines) {
  QmpFramer f(16);
  ASSERT_TRUE(f.append("\n\r\n{}\n"));
  EXPECT_EQ(drain(f), (std::vector<std::string>{"", "", "{}"}));
}

}  // namespace
}  // namespace relink::qemu
