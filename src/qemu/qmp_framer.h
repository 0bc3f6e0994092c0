// SPDX-License-Identifier: GPL-2.0-or-later
// Splits the bytes of a QMP stream into lines. QEMU's monitor writes each
// reply, event and the greeting as one JSON object on one line ending in
// "\r\n" (as long as the monitor is not configured with pretty=on), so a line
// is a message. Pure: no sockets, fed by whatever the reader got.
#pragma once

#include <cstddef>
#include <deque>
#include <optional>
#include <string>
#include <string_view>

namespace relink::qemu {

class QmpFramer {
 public:
  // A line may hold at most max_line_bytes, not counting its "\n" or "\r\n".
  explicit QmpFramer(size_t max_line_bytes) : max_line_(max_line_bytes) {}

  // Adds bytes as read from the socket. Returns false once a line is longer
  // than the limit: the stream cannot be trusted any more, so every later byte
  // is dropped until clear(); lines completed before the overflow are still
  // returned by next_line(). Memory stays bounded by the limit plus the lines
  // not yet popped, so pop them all after each append.
  [[nodiscard]] bool append(std::string_view bytes);

  // The oldest complete line, without its terminator.
  std::optional<std::string> next_line();

  // Forgets everything (a new session starts).
  void clear();

  // Bytes held: complete lines not popped yet plus the partial line.
  size_t buffered_bytes() const { return lines_bytes_ + partial_.size(); }

 private:
  size_t max_line_;
  std::string partial_;  // the line being received
  std::deque<std::string> lines_;
  size_t lines_bytes_ = 0;
  bool overflowed_ = false;
};

}  // namespace relink::qemu
