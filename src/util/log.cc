// SPDX-License-Identifier: GPL-2.0-or-later
// Creates the named spdlog loggers on one sink and sets their level and journal prefixes.
#include "util/log.h"

#include <spdlog/sinks/base_sink.h>

#include <cstdio>
#include <mutex>

namespace relink::log {
namespace {

// One sink for every logger, safe to use from several threads (relinkd's
// loop and its libvirt thread): stderr lines, either with a timestamp or,
// under journald, with sd-daemon(3) "<N>" priority prefixes instead (journald
// reads them from a service's stderr and keeps its own timestamps). setup()
// switches the style in place, so a reload never changes a logger's sinks
// while another thread logs, and keeps the line format.
class StderrSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  void set_journal(bool journal) {
    std::lock_guard lock(mutex_);
    journal_ = journal;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    if (!journal_) {
      spdlog::memory_buf_t buf;
      formatter_->format(msg, buf);
      std::fwrite(buf.data(), 1, buf.size(), stderr);
      return;
    }
    int prio = 6;
    switch (msg.level) {
      case spdlog::level::trace:
      case spdlog::level::debug: prio = 7; break;
      case spdlog::level::info: prio = 6; break;
      case spdlog::level::warn: prio = 4; break;
      case spdlog::level::err: prio = 3; break;
      case spdlog::level::critical: prio = 2; break;
      default: break;
    }
    std::fprintf(stderr, "<%d>%.*s: %.*s\n", prio, static_cast<int>(msg.logger_name.size()),
                 msg.logger_name.data(), static_cast<int>(msg.payload.size()), msg.payload.data());
  }
  void flush_() override { std::fflush(stderr); }

 private:
  bool journal_ = false;
};

struct State {
  std::mutex mu;
  std::shared_ptr<StderrSink> sink = std::make_shared<StderrSink>();
  spdlog::level::level_enum level = spdlog::level::warn;
};

State& state() {
  static State s;
  return s;
}

}  // namespace

std::shared_ptr<spdlog::logger> get(const std::string& name) {
  auto& s = state();
  std::lock_guard lock(s.mu);
  if (auto l = spdlog::get(name)) return l;
  auto l = std::make_shared<spdlog::logger>(name, s.sink);
  l->set_level(s.level);
  l->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %n: %v");
  spdlog::register_logger(l);
  return l;
}

void setup(spdlog::level::level_enum level, bool journal_prefix) {
  auto& s = state();
  std::lock_guard lock(s.mu);
  s.level = level;
  s.sink->set_journal(journal_prefix);
  spdlog::apply_all([&](const std::shared_ptr<spdlog::logger>& l) { l->set_level(level); });
}

}  // namespace relink::log
