// relinkd: keeps QEMU guests' macvtap NICs connected while host links come and go.
#include <sys/resource.h>

#include <CLI/CLI.hpp>

#include <cstring>
#include <iostream>

#include "config/config.h"
#include "daemon/daemon.h"
#include "util/log.h"

int main(int argc, char** argv) {
  CLI::App app{
      "relinkd: keeps QEMU guests' macvtap NICs connected when their host parent interface is\n"
      "deleted and re-created. Runs in the foreground (systemd style); logs to stderr.",
      "relinkd"};
  std::string config_path = relink::config::kDefaultPath;
  std::string check_path;
  std::string log_level;
  bool version = false;
  app.add_option("-c,--config", config_path, "configuration file")->type_name("FILE")->capture_default_str();
  app.add_option("--check-config", check_path,
                 "validate FILE and exit: 0 when valid, else 1 with FILE:LINE:COL: message on stderr")
      ->type_name("FILE");
  app.add_option("-l,--log-level", log_level, "trace, debug, info, warn or error (overrides the config)")
      ->type_name("LEVEL")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  app.add_flag("-V,--version", version, "print the version and exit");
  CLI11_PARSE(app, argc, argv);

  if (version) {
    std::cout << "relinkd " << RELINK_VERSION << "\n";
    return 0;
  }
  if (!check_path.empty()) {
    try {
      auto cfg = relink::config::load_file(check_path);
      size_t bindings = 0;
      for (const auto& vm : cfg.vms) bindings += vm.macvtaps.size();
      std::cout << check_path << ": valid (" << cfg.vms.size() << " VMs, " << bindings << " bindings)\n";
      return 0;
    } catch (const relink::config::ConfigError& e) {
      std::cerr << e.what() << "\n";
      return 1;
    }
  }

  relink::config::Config cfg;
  try {
    cfg = relink::config::load_file(config_path);
  } catch (const relink::config::ConfigError& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  const bool journal = getenv("JOURNAL_STREAM") != nullptr;
  relink::log::setup(spdlog::level::from_str(log_level.empty() ? cfg.daemon.log_level : log_level), journal);
  // systemd starts services with a soft fd limit of 1024 (for select()
  // users; relinkd has none) and a far higher hard one: take the hard one,
  // so that many VMs, passt processes and control clients fit.
  if (rlimit rl{}; getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    const rlim_t soft = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
      relink::log::get("daemon")->debug("raised the soft fd limit from {} to {}", soft, rl.rlim_max);
    else
      relink::log::get("daemon")->debug("cannot raise the soft fd limit from {}: {}", soft, std::strerror(errno));
  }
  relink::daemon::Daemon daemon(std::move(cfg), log_level);
  return daemon.run();
}
