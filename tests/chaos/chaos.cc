// SPDX-License-Identifier: GPL-2.0-or-later
// relink-chaos: a seeded chaos run. One relinkd follows a hub VM, a replug
// VM with a booted guest, a libvirt domain with a booted guest and a passt
// binding at once (world.h); faults drawn from the seed (plan.h) are
// carried out in windows (faults.h), and after each window, once relinkd
// is quiet, the invariants are checked against the kernel, QEMU, /proc and
// the guests (checks.h). Prints the seed, the faults per kind, the checks
// and every violation with the faults that led to it; exits 1 on any
// violation. The same seed and options replay the same fault sequence.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "checks.h"
#include "faults.h"
#include "plan.h"
#include "world.h"

using namespace relink::chaos;
using namespace std::chrono_literals;

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

constexpr const char* kUsage =
    "usage: relink-chaos [--seed N] [--faults N] [--duration SECONDS] [--max-per-window N] [--cheap-only]\n"
    "                    [--print-plan] [--report FILE] [--keep-logs] [--fail-fast] [--window N [--repeat K]]\n"
    "                    [--max-fds N] [--max-rss-mb N]\n"
    "                    [--quiet-for SECONDS] [--quiet-bound SECONDS] [--help]";

void print_help() {
  std::printf(
      "%s\n\n"
      "A seeded chaos run against a real relinkd (run as root). One relinkd follows, at once:\n"
      "  hub1  a QEMU (no guest) with a hub-attached NIC on parent ph and a passt binding\n"
      "        (stream-server netdev net1)\n"
      "  rep1  a QEMU with the booted test guest, started like a launcher starts one (its own\n"
      "        macvtap on parent pr as fd 3), attach = \"replug\"\n"
      "  lv1   a domain of a private libvirtd with the booted test guest, <interface\n"
      "        type='direct'> on parent pl, followed through [libvirt]\n"
      "Faults, drawn from the seed before the run starts: parents deleted and re-created\n"
      "(short and long gaps), carrier flaps, relinkd killed -9 at random instants, mid-release,\n"
      "mid-attach (on relinkctl monitor's word) and right after a parent returns, relinkd killed\n"
      "while a paused guest holds a release (the guest resumed while no relinkd runs), SIGTERM\n"
      "and start, reloads (unchanged, a replug VM changed, [libvirt] changed), guests paused and\n"
      "resumed, passt killed, libvirtd restarted, QEMU killed and started again by its launcher\n"
      "(optionally while relinkd is down).\n"
      "After each window of 1..max-per-window faults: relinkd running, guests resumed, parents\n"
      "present; then, once relinkd's status has been settled and unchanged for --quiet-for:\n"
      "every binding whose parent exists is attached; QEMU holds exactly one fd of the\n"
      "binding's macvtap (its device number, opened as /dev/tap<its ifindex>) and no other\n"
      "macvtap; query-fdsets is empty and QEMU has exactly the binding's netdevs and one NIC\n"
      "with the guest's MAC; no macvtap no binding has; exactly one passt, the binding's; the\n"
      "guests answer ping; relinkd's fd count and RSS within bounds. What a violation leaves\n"
      "behind is repaired (reattach, strays removed, the VM relaunched) before the next window.\n"
      "\n"
      "Options:\n"
      "  --seed N            the run's seed (default: from the clock; printed either way)\n"
      "  --faults N          faults in the run (default 20)\n"
      "  --duration SECONDS  start no window after this long (default: no limit)\n"
      "  --max-per-window N  faults per window, drawn from 1..N (default 4)\n"
      "  --cheap-only        leave out QEMU restarts and libvirtd restarts\n"
      "  --print-plan        print the run's windows and faults, run nothing (no root needed)\n"
      "  --report FILE       write the report there too, after every window\n"
      "  --keep-logs         keep relinkd's log and the consoles as /tmp/relink-chaos-*\n"
      "  --fail-fast         stop after the first window with a violation (no repair)\n"
      "  --window N          run window N of the plan alone (a finding's faults, on a fresh world)\n"
      "  --repeat K          ... K times in a row (default 1)\n"
      "  --max-fds N         relinkd's open fds allowed (default 96)\n"
      "  --max-rss-mb N      relinkd's resident MiB allowed (default 64)\n"
      "  --quiet-for S       seconds of unchanged, settled status that count as quiet (default 3)\n"
      "  --quiet-bound S     not quiet after this long: a violation (default 120); unsettled and\n"
      "                      unchanged for 30 s (every guest up) ends the wait at once\n"
      "Exit status: 0 no violation, 1 violations, 2 the world could not be set up, 77 skipped\n"
      "(not root, no libvirtd). Everything it creates (namespaces relink-chaos-*, relink-chaosp-*,\n"
      "QEMUs, libvirtd, passt, relinkd, /tmp/relink-chaos-*, /tmp/relink-lv-*) is removed on exit\n"
      "and on SIGINT/SIGTERM (the run stops after the current fault and reports).\n",
      kUsage);
}

struct Options {
  PlanOptions plan;
  CheckLimits limits;
  int duration_s = 0;
  size_t only_window = 0;  // > 0: run that window of the plan alone, `repeat` times
  int repeat = 1;
  bool print_plan = false, keep_logs = false, seed_given = false, fail_fast = false;
  std::string report;
};

bool parse(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto num = [&](long& out) {
      if (i + 1 >= argc) return false;
      char* end = nullptr;
      out = std::strtol(argv[++i], &end, 10);
      return *end == '\0' && out >= 0;
    };
    long n = 0;
    if (a == "--help" || a == "-h") {
      print_help();
      std::exit(0);
    } else if (a == "--seed") {
      if (i + 1 >= argc) return false;
      o.plan.seed = std::strtoull(argv[++i], nullptr, 10);
      o.seed_given = true;
    } else if (a == "--faults" && num(n)) {
      o.plan.faults = static_cast<int>(n);
    } else if (a == "--duration" && num(n)) {
      o.duration_s = static_cast<int>(n);
    } else if (a == "--max-per-window" && num(n) && n > 0) {
      o.plan.max_per_window = static_cast<int>(n);
    } else if (a == "--max-fds" && num(n)) {
      o.limits.max_fds = static_cast<int>(n);
    } else if (a == "--max-rss-mb" && num(n)) {
      o.limits.max_rss_kib = n * 1024;
    } else if (a == "--quiet-for" && num(n)) {
      o.limits.quiet_for = std::chrono::seconds(n);
    } else if (a == "--quiet-bound" && num(n)) {
      o.limits.quiet_bound = std::chrono::seconds(n);
    } else if (a == "--cheap-only") {
      o.plan.cheap_only = true;
    } else if (a == "--print-plan") {
      o.print_plan = true;
    } else if (a == "--window" && num(n) && n > 0) {
      o.only_window = static_cast<size_t>(n);
    } else if (a == "--repeat" && num(n) && n > 0) {
      o.repeat = static_cast<int>(n);
    } else if (a == "--fail-fast") {
      o.fail_fast = true;
    } else if (a == "--keep-logs") {
      o.keep_logs = true;
    } else if (a == "--report" && i + 1 < argc) {
      o.report = argv[++i];
    } else {
      return false;
    }
  }
  return true;
}

std::string now_utc() {
  char buf[32];
  const time_t t = time(nullptr);
  tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  return buf;
}

struct Found {
  size_t window;  // 0: right after the start
  Violation v;
};

struct Run {
  const Options& o;
  const std::vector<Window>& plan;
  FaultStats stats;
  std::vector<Found> found;
  size_t windows_done = 0;
  int checks = 0, max_fds = 0;
  long max_rss = 0;
  double max_quiet = 0;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();

  std::string faults_of(size_t window) const {
    if (window == 0 || window > plan.size()) return "(start)";
    std::string s;
    for (const auto& f : plan[window - 1].faults) s += (s.empty() ? "" : "; ") + f.describe();
    return s;
  }
  std::string report(const std::string& ending) const {
    std::ostringstream r;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    int total = 0;
    for (const auto& [k, n] : stats.done) total += n;
    r << "chaos report: seed " << o.plan.seed << " (--faults " << o.plan.faults << " --max-per-window "
      << o.plan.max_per_window << (o.plan.cheap_only ? " --cheap-only" : "") << "), " << ending << "\n";
    r << "  duration " << static_cast<long>(secs) << " s; windows " << windows_done << " of " << plan.size()
      << "; faults " << total << "\n  faults per kind:";
    for (FaultKind k : all_kinds()) {
      auto it = stats.done.find(kind_name(k));
      r << " " << kind_name(k) << "=" << (it == stats.done.end() ? 0 : it->second);
    }
    r << "\n";
    if (!stats.trigger_missed.empty()) {
      r << "  kills whose monitor trigger did not come within 20 s (killed anyway):";
      for (const auto& [k, n] : stats.trigger_missed) r << " " << k << "=" << n;
      r << "\n";
    }
    r << "  checks " << checks << ", violations " << found.size() << "; relinkd at most " << max_fds << " fds, "
      << max_rss / 1024 << " MiB RSS; longest quiet wait " << static_cast<int>(max_quiet) << " s\n";
    std::map<std::string, int> per_kind;
    for (const auto& f : found) ++per_kind[f.v.kind];
    if (!per_kind.empty()) {
      r << "  violations per kind:";
      for (const auto& [k, n] : per_kind) r << " " << k << "=" << n;
      r << "\n";
    }
    for (const auto& f : found) {
      r << "  VIOLATION window " << f.window << " [" << f.v.kind << (f.v.vm.empty() ? "" : " " + f.v.vm)
        << "] " << f.v.detail << "\n    faults of the window: " << faults_of(f.window)
        << "\n    of the window before: " << faults_of(f.window ? f.window - 1 : 0) << "\n";
    }
    return r.str();
  }
  void write_report(const std::string& ending) const {
    if (o.report.empty()) return;
    std::ofstream(o.report) << report(ending);
  }
  void record(size_t window, const CheckResult& c) {
    checks += c.checks;
    max_fds = std::max(max_fds, c.relinkd_fds);
    max_rss = std::max(max_rss, c.relinkd_rss_kib);
    max_quiet = std::max(max_quiet, c.quiet_s);
    for (const auto& v : c.failed) found.push_back({window, v});
    std::printf("[%s] window %zu: quiet after %.1f s, %d checks, %zu violations%s\n", now_utc().c_str(), window,
                c.quiet_s, c.checks, c.failed.size(), c.failed.empty() ? "" : ":");
    for (const auto& v : c.failed)
      std::printf("    [%s%s] %s\n", v.kind.c_str(), v.vm.empty() ? "" : (" " + v.vm).c_str(), v.detail.c_str());
    std::fflush(stdout);
  }
};

int run(const Options& o, const std::vector<Window>& plan) {
  Run run{o, plan};
  std::string ending = "completed";
  try {
    World w(o.keep_logs);
    std::printf("[%s] setting up (libvirtd, two guests booting, relinkd)\n", now_utc().c_str());
    std::fflush(stdout);
    w.init();
    const CheckResult first = check_world(w, o.limits);
    run.record(0, first);
    repair(w, first);
    for (size_t i = 0; i < plan.size(); ++i) {
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - run.t0).count();
      if (g_stop || (o.duration_s > 0 && secs >= o.duration_s)) {
        ending = g_stop ? "stopped by a signal" : "stopped at --duration";
        break;
      }
      std::printf("[%s] window %zu:", now_utc().c_str(), i + 1);
      for (const auto& f : plan[i].faults) std::printf(" {%s}", f.describe().c_str());
      std::printf("\n");
      std::fflush(stdout);
      for (const auto& f : plan[i].faults) run_fault(w, f, run.stats);
      settle(w);
      CheckResult c = check_world(w, o.limits);
      run.record(i + 1, c);
      run.windows_done = i + 1;
      if (o.fail_fast && !c.failed.empty()) {
        ending = "stopped at the first window with a violation (--fail-fast)";
        break;
      }
      repair(w, c);
      run.write_report("running");
    }
  } catch (const SetupError& e) {
    ending = std::string("aborted: ") + e.what();
    std::cout << run.report(ending);
    run.write_report(ending);
    return 2;
  }
  std::cout << run.report(ending);
  run.write_report(ending);
  return run.found.empty() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!parse(argc, argv, o)) {
    std::fprintf(stderr, "%s\n", kUsage);
    return 64;
  }
  if (!o.seed_given) o.plan.seed = static_cast<uint64_t>(time(nullptr)) ^ (static_cast<uint64_t>(getpid()) << 32);
  auto plan = make_plan(o.plan);
  if (o.only_window > 0) {
    if (o.only_window > plan.size()) {
      std::fprintf(stderr, "relink-chaos: the plan has %zu windows\n", plan.size());
      return 64;
    }
    const Window w = plan[o.only_window - 1];
    plan.assign(static_cast<size_t>(o.repeat), w);
  }
  if (o.print_plan) {
    std::printf("seed %llu\n%s", static_cast<unsigned long long>(o.plan.seed), describe(plan).c_str());
    return 0;
  }
  if (geteuid() != 0) {
    std::printf("relink-chaos: skipped: needs root (namespaces, macvtaps, QEMU, libvirtd)\n");
    return 77;
  }
  if (!std::filesystem::exists("/usr/sbin/libvirtd")) {
    std::printf("relink-chaos: skipped: no /usr/sbin/libvirtd (scripts/install-deps.sh installs it)\n");
    return 77;
  }
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGPIPE, SIG_IGN);
  std::printf("relink-chaos: seed %llu, %d faults in %zu windows (replay: --seed %llu --faults %d "
              "--max-per-window %d%s)\n%s",
              static_cast<unsigned long long>(o.plan.seed), o.plan.faults, plan.size(),
              static_cast<unsigned long long>(o.plan.seed), o.plan.faults, o.plan.max_per_window,
              o.plan.cheap_only ? " --cheap-only" : "", describe(plan).c_str());
  std::fflush(stdout);
  return run(o, plan);
}
