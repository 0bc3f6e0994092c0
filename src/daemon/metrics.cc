// SPDX-License-Identifier: GPL-2.0-or-later
// Renders relinkd's status and recovery histograms as Prometheus text (`relinkctl metrics`).
#include "daemon/metrics.h"

#include <charconv>
#include <set>
#include <vector>

namespace relink::daemon {
namespace {

// The shortest text that reads back as the same double ("0.001", "2.5").
std::string num(double v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

std::string str(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

uint64_t count(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_unsigned() ? it->get<uint64_t>() : 0;
}

// Every state a binding of each kind can be in, so that a scraper sees 0
// rather than a missing series.
const std::map<std::string, std::vector<std::string>> kStates = {
    {"macvtap", {"waiting-parent", "releasing", "attaching", "attached", "backoff", "failed", "vm-offline"}},
    {"passt", {"starting", "running", "backoff", "failed", "vm-offline"}},
    {"bridge",
     {"waiting-tap", "attached", "waiting-bridge", "backoff", "failed", "moved", "detached", "tap-gone"}},
};

// The binding's id among its VM's: a macvtap's NIC, a passt's netdev, a tap.
std::string binding_id(const nlohmann::json& b, const std::string& kind) {
  if (kind == "passt") return str(b, "netdev");
  if (kind == "bridge") return str(b, "tap");
  return str(b, "nic");
}

struct Writer {
  std::string out;
  void head(const std::string& name, const char* type, const char* help) {
    out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  }
  void sample(const std::string& name, const std::string& labels, const std::string& value) {
    out += name + (labels.empty() ? "" : "{" + labels + "}") + " " + value + "\n";
  }
};

}  // namespace

void RecoveryHistogram::observe(double seconds) {
  for (size_t i = 0; i < kBounds.size(); ++i)
    if (seconds <= kBounds[i]) {
      ++buckets_[i];
      break;
    }
  ++count_;
  sum_ += seconds;
}

std::string escape_label(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string format_metrics(const nlohmann::json& status, const std::map<std::string, RecoveryHistogram>& recovery) {
  Writer w;
  const nlohmann::json& daemon = status.value("daemon", nlohmann::json::object());
  w.head("relink_info", "gauge", "relinkd's version.");
  w.sample("relink_info", "version=\"" + escape_label(str(daemon, "version")) + "\"", "1");
  w.head("relink_uptime_seconds", "gauge", "Seconds since relinkd started.");
  w.sample("relink_uptime_seconds", "", num(daemon.value("uptime_s", 0.0)));
  w.head("relink_netlink_overruns_total", "counter", "rtnetlink overruns recovered by a re-dump.");
  w.sample("relink_netlink_overruns_total", "", std::to_string(count(daemon, "netlink_overruns")));

  std::map<std::string, uint64_t> vms_by_source = {{"config", 0}, {"runtime", 0}, {"libvirt", 0}, {"bridge", 0}};
  std::map<std::pair<std::string, std::string>, uint64_t> by_state;
  for (const auto& [kind, states] : kStates)
    for (const auto& s : states) by_state[{kind, s}] = 0;
  std::string connected, reattaches, failures, released;
  const auto vms = status.value("vms", nlohmann::json::array());
  for (const auto& vm : vms) {
    const std::string name = escape_label(str(vm, "name"));
    const std::string source = str(vm, "source");
    ++vms_by_source[source.empty() ? "config" : source];
    const bool up = str(vm, "qmp") == "connected" || str(vm, "libvirt") == "connected" || source == "bridge";
    connected += "relink_vm_connected{vm=\"" + name + "\"} " + (up ? "1" : "0") + "\n";
    for (const auto& b : vm.value("bindings", nlohmann::json::array())) {
      const std::string kind = str(b, "kind");
      ++by_state[{kind, str(b, "state")}];
      const std::string id = escape_label(binding_id(b, kind));
      const std::string labels = "vm=\"" + name + "\",binding=\"" + id + "\",kind=\"" + escape_label(kind) + "\"";
      // A macvtap's first attach is not a recovery; a passt's restarts and a tap's re-joins are.
      const uint64_t attaches = count(b, "attaches");
      const uint64_t n = kind == "passt"    ? count(b, "restarts")
                         : kind == "bridge" ? count(b, "rejoins")
                                            : (attaches ? attaches - 1 : 0);
      reattaches += "relink_reattaches_total{" + labels + "} " + std::to_string(n) + "\n";
      failures += "relink_failures_total{" + labels + "} " + std::to_string(count(b, "failures_total")) + "\n";
      // Replug bindings only: whether the guest is without its NIC.
      if (auto np = b.find("nic_present"); np != b.end() && np->is_boolean())
        released += "relink_nic_released{" + labels + "} " + (np->get<bool>() ? "0" : "1") + "\n";
    }
  }
  w.head("relink_vms", "gauge", "VMs relinkd manages, by where they come from.");
  for (const auto& [source, n] : vms_by_source) w.sample("relink_vms", "source=\"" + source + "\"", std::to_string(n));
  w.head("relink_vm_connected", "gauge", "1 when relinkd reaches the VM (QMP or libvirt), else 0.");
  w.out += connected;
  w.head("relink_bindings", "gauge", "Bindings by kind and state.");
  for (const auto& [ks, n] : by_state)
    w.sample("relink_bindings", "kind=\"" + escape_label(ks.first) + "\",state=\"" + escape_label(ks.second) + "\"",
             std::to_string(n));
  w.head("relink_reattaches_total", "counter", "Recoveries of a binding: macvtaps attached again, passt restarted, taps back in their bridge.");
  w.out += reattaches;
  w.head("relink_failures_total", "counter", "Failed attaches or passt starts of a binding since relinkd started.");
  w.out += failures;
  w.head("relink_nic_released", "gauge",
         "1 while a re-plugged NIC is out of its guest (released, to be plugged in again), else 0.");
  w.out += released;
  w.head("relink_recovery_seconds", "histogram",
         "From the event that broke a binding (parent back, passt exit, tap out of its bridge) to the guest connected again.");
  for (const char* kind : {"macvtap", "passt", "bridge"}) {
    auto it = recovery.find(kind);
    const RecoveryHistogram h = it != recovery.end() ? it->second : RecoveryHistogram{};
    uint64_t cumulative = 0;
    for (size_t i = 0; i < RecoveryHistogram::kBounds.size(); ++i) {
      cumulative += h.buckets()[i];
      w.sample("relink_recovery_seconds_bucket",
               std::string("kind=\"") + kind + "\",le=\"" + num(RecoveryHistogram::kBounds[i]) + "\"",
               std::to_string(cumulative));
    }
    w.sample("relink_recovery_seconds_bucket", std::string("kind=\"") + kind + "\",le=\"+Inf\"",
             std::to_string(h.count()));
    w.sample("relink_recovery_seconds_sum", std::string("kind=\"") + kind + "\"", num(h.sum()));
    w.sample("relink_recovery_seconds_count", std::string("kind=\"") + kind + "\"", std::to_string(h.count()));
  }
  return w.out;
}

}  // namespace relink::daemon
