// SPDX-License-Identifier: GPL-2.0-or-later
// Splits a QMP byte stream into lines, with a bound on a line's size.
#include "qemu/qmp_framer.h"

namespace relink::qemu {

bool QmpFramer::append(std::string_view bytes) {
  while (!overflowed_ && !bytes.empty()) {
    const size_t nl = bytes.find('\n');
    const std::string_view piece = bytes.substr(0, nl);  // up to, not including, '\n'
    // One byte over the limit is allowed while the line is open: it may be
    // the '\r' of a "\r\n" split across two reads.
    if (partial_.size() + piece.size() > max_line_ + 1) {
      overflowed_ = true;
      break;
    }
    partial_.append(piece);
    if (nl == std::string_view::npos) {
      if (partial_.size() > max_line_ && partial_.back() != '\r') overflowed_ = true;
      break;
    }
    if (!partial_.empty() && partial_.back() == '\r') partial_.pop_back();
    if (partial_.size() > max_line_) {
      overflowed_ = true;
      break;
    }
    lines_bytes_ += partial_.size();
    lines_.push_back(std::move(partial_));
    partial_.clear();
    bytes.remove_prefix(nl + 1);
  }
  if (overflowed_) {
    partial_.clear();
    partial_.shrink_to_fit();
  }
  return !overflowed_;
}

std::optional<std::string> QmpFramer::next_line() {
  if (lines_.empty()) return std::nullopt;
  std::string line = std::move(lines_.front());
  lines_.pop_front();
  lines_bytes_ -= line.size();
  return line;
}

void QmpFramer::clear() {
  partial_.clear();
  partial_.shrink_to_fit();
  lines_.clear();
  lines_bytes_ = 0;
  overflowed_ = false;
}

}  // namespace relink::qemu
