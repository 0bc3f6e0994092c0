#include "util/log.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/sinks/base_sink.h>

#include <cstdio>
#include <mutex>

namespace relink::log {
namespace {

// stderr lines with sd-daemon(3) "<N>" priority prefixes, which journald reads
// from a service's stderr.
class JournalPrefixSink final : public spdlog::sinks::base_sink<spdlog::details::null_mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
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
};

struct State {
  std::mutex mu;
  spdlog::sink_ptr sink = std::make_shared<spdlog::sinks::stderr_sink_st>();
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
  if (journal_prefix) s.sink = std::make_shared<JournalPrefixSink>();
  else s.sink = std::make_shared<spdlog::sinks::stderr_sink_st>();
  spdlog::apply_all([&](const std::shared_ptr<spdlog::logger>& l) {
    l->sinks().clear();
    l->sinks().push_back(s.sink);
    l->set_level(level);
  });
}

}  // namespace relink::log
