// SPDX-License-Identifier: GPL-2.0-or-later
// relinkd's loop and wiring: start-up, signals, reload and the plan it
// carries out, the control commands.
#include "daemon/daemon.h"

#include <signal.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>

#include "daemon/macvtap_reconcile.h"
#include "daemon/qmp_vm.h"
#include "daemon/vm_plan.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/trusted_dir.h"

namespace relink::daemon {
namespace {

auto logger() { return log::get("daemon"); }

// Creates a missing directory with `mode`; an existing one is left as it is
// (it may be shared, like /run).
Result<void> make_dir(const std::string& path, mode_t mode) {
  std::error_code ec;
  if (!std::filesystem::create_directories(path, ec)) {
    if (ec) return Error{ec.value(), "create " + path + ": " + ec.message()};
    return ok();
  }
  if (chmod(path.c_str(), mode) < 0) return Error::last("chmod " + path);
  return ok();
}

// state_dir and state_dir/passt hold the pidfiles naming processes relinkd
// adopts or stops: they must be relinkd's alone (util/trusted_dir.h). What
// is missing is created; what exists and others could have written is
// refused, and relinkd does not start.
Result<void> make_state_dirs(const std::string& state_dir) {
  auto top = trusted::open_dir(state_dir, 0755);
  if (!top) return Error{top.error().code, "state_dir: " + top.error().message};
  auto passt_dir = trusted::open_subdir(top->get(), "passt", 0700, /*create=*/true, state_dir + "/passt");
  if (!passt_dir) return Error{passt_dir.error().code, "state_dir: " + passt_dir.error().message};
  return ok();
}

}  // namespace

Daemon::Daemon(config::Config cfg, std::string log_level_override)
    : cfg_(std::move(cfg)), log_level_override_(std::move(log_level_override)) {}

Daemon::~Daemon() {
  // VMs first: their sessions' callbacks refer to their runners and attachers.
  libvirt_.reset();
  vms_.clear();
  control_.reset();
  links_.reset();
}

Result<void> Daemon::setup() {
  sd_event* e = nullptr;
  if (int r = sd_event_new(&e); r < 0) return Error::from_errno(-r, "sd_event_new");
  loop_.reset(e);
  defer_ = std::make_unique<DeferQueue>(loop_.get());
  started_us_ = monotonic_us();

  sigset_t mask;
  sigemptyset(&mask);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&mask, sig);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  signal(SIGPIPE, SIG_IGN);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) {
    sd_event_source* s = nullptr;
    if (int r = sd_event_add_signal(loop_.get(), &s, sig, &Daemon::on_signal, this); r < 0)
      return Error::from_errno(-r, "sd_event_add_signal");
    signals_.emplace_back(s);
  }
  sd_event_set_watchdog(loop_.get(), true);

  if (auto r = make_state_dirs(cfg_.daemon.state_dir); !r) return r;
  runtime_ = std::make_unique<RuntimeRegistry>(cfg_.daemon.state_dir);
  runtime_->load(known_vms(), cfg_.daemon.control_socket);
  passt_ = std::make_unique<PasstSupervisor>(loop_.get(), *defer_, std::make_unique<passt::ProcessSpawner>());
  passt_->probe(wanted_vms(), cfg_.daemon.passt);
  factory_ = std::make_unique<macvtap::RtnlMacvtapFactory>(cfg_.daemon.node_dir);
  remove_unheld_macvtaps(*factory_, "", "start");

  links_ = std::make_unique<netlink::LinkWatcher>(
      loop_.get(), [this](const std::vector<netlink::LinkEvent>& ev) { dispatcher_->on_links(ev); },
      cfg_.daemon.netlink_receive_buffer);
  dispatcher_ = std::make_unique<LinkDispatcher>(links_->table(), vms_);
  if (auto r = links_->start(); !r) return Error{r.error().code, "rtnetlink: " + r.error().message};
  journal_ = std::make_unique<IntentJournal>(cfg_.daemon.state_dir);
  if (auto r = journal_->load(); !r) logger()->error("journal of intent: {}", r.error().message);
  services_ = Services{loop_.get(), defer_.get(), factory_.get(), dispatcher_.get(), &reporter_, &cfg_, journal_.get()};

  const std::string sock_dir = std::filesystem::path(cfg_.daemon.control_socket).parent_path();
  if (auto r = make_dir(sock_dir, 0755); !r) return r;
  control_ = make_control_server();
  if (auto r = control_->listen(cfg_.daemon.control_socket, cfg_.daemon.control_group); !r) return r;
  reporter_.set_server(control_.get());

  for (const auto& vm : wanted_vms()) {
    auto& v = vms_.add(std::make_unique<QmpVm>(vm, runtime_->find(vm.name) ? "runtime" : "config", services_, *passt_));
    v.start();
  }
  stop_unclaimed_passts();
  if (cfg_.libvirt.enabled) {
    libvirt_ = std::make_unique<LibvirtDomains>(services_, vms_, [this](const std::string& n) { return claim(n); });
    if (auto r = libvirt_->start(); !r) return r;
  }
  return ok();
}

ControlApi Daemon::make_control_api() {
  ControlApi api;
  api.add("status", [this](const nlohmann::json&) { return done(status()); });
  api.add("reattach", [this](const nlohmann::json& req) {
    const std::string name = string_field(req, "vm");
    ManagedVm* vm = vms_.find(name);
    return vm ? vm->reattach(string_field(req, "nic")) : refused(vms_.no_such_vm(name));
  });
  api.add("reload", [this](const nlohmann::json&) {
    auto r = reload();
    if (r) return done(*r);
    logger()->error("reload asked over the control socket refused, keeping the running configuration: {}",
                    r.error().message);
    return refused(r.error().message);
  });
  api.add("add", [this](const nlohmann::json& req) { return control_add(string_field(req, "toml")); });
  api.add("remove", [this](const nlohmann::json& req) { return control_remove(string_field(req, "vm")); });
  api.add("qemu-args", [this](const nlohmann::json& req) {
    const std::string name = string_field(req, "vm");
    const ManagedVm* vm = vms_.find(name);
    if (!vm) return refused(vms_.no_such_vm(name));
    auto args = vm->qemu_args();
    return args ? done(*args) : refused(args.error().message);
  });
  api.mention("monitor");
  api.add("metrics", [this](const nlohmann::json&) {
    return done({{"text", format_metrics(status(), reporter_.recovery())}});
  });
  return api;
}

std::unique_ptr<ControlServer> Daemon::make_control_server() {
  return std::make_unique<ControlServer>(
      loop_.get(), [api = make_control_api()](const nlohmann::json& req, const Peer&) { return api.handle(req); });
}

int Daemon::on_signal(sd_event_source* s, const signalfd_siginfo* si, void* userdata) {
  auto* self = static_cast<Daemon*>(userdata);
  if (si->ssi_signo == SIGHUP) {
    if (auto r = self->reload(); !r) logger()->error("reload failed, keeping the running configuration: {}", r.error().message);
    return 0;
  }
  logger()->info("received {}, exiting", strsignal(static_cast<int>(si->ssi_signo)));
  sd_notify(0, "STOPPING=1");
  return sd_event_exit(sd_event_source_get_event(s), 0);
}

Result<nlohmann::json> Daemon::reload() {
  sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu", static_cast<unsigned long long>(monotonic_us()));
  auto refuse = [](Error e) -> Result<nlohmann::json> {
    sd_notify(0, "READY=1");
    return e;
  };
  config::Config next;
  try {
    next = config::load_file(cfg_.path);
  } catch (const config::ConfigError& e) {
    return refuse(Error{EINVAL, e.what()});
  }
  // VMs registered at runtime stay: a file VM may not take one's place.
  for (const auto& rv : runtime_->vms())
    if (next.find_vm(rv.vm.name))
      return refuse(Error{EEXIST, cfg_.path + ": VM '" + rv.vm.name +
                                      "' is also registered at runtime (relinkctl remove " + rv.vm.name + " first)"});
  if (next.daemon.control_socket != cfg_.daemon.control_socket ||
      next.daemon.control_group != cfg_.daemon.control_group) {
    auto server = make_control_server();
    if (auto r = server->listen(next.daemon.control_socket, next.daemon.control_group); !r) return refuse(r.error());
    // This may run inside the old server's callback: free it from the loop.
    std::shared_ptr<ControlServer> previous(std::move(control_));
    defer_->post([previous] {});
    control_ = std::move(server);
    reporter_.set_server(control_.get());
  } else if (auto r = control_->refresh_group(next.daemon.control_group); !r) {
    return refuse(r.error());
  }
  log::setup(spdlog::level::from_str(log_level_override_.empty() ? next.daemon.log_level : log_level_override_),
             getenv("JOURNAL_STREAM") != nullptr);
  // The passt binary may have been upgraded or reconfigured.
  config::Config previous = std::move(cfg_);
  cfg_ = std::move(next);
  // Registrations held aside at start (NSS was not ready, a clash) may load now.
  std::vector<const config::Vm*> others;
  for (const auto& v : cfg_.vms) others.push_back(&v);
  for (const auto& v : vms_.all())
    if (dynamic_cast<const LibvirtVm*>(v.get())) others.push_back(&v->cfg());
  runtime_->retry_held(others, cfg_.daemon.control_socket);
  passt_->probe(wanted_vms(), cfg_.daemon.passt);
  journal_->drop_gone();
  nlohmann::json changes = apply_vms(previous);
  // Sessions verified against the previous list are checked again (a VM
  // whose qemu_user changed was started anew by apply_vms, and so is too).
  if (previous.daemon.qemu_binaries != cfg_.daemon.qemu_binaries)
    for (auto& v : vms_.all())
      if (auto* q = dynamic_cast<QmpVm*>(v.get())) q->reverify();
  const std::string what = describe_changes(changes);
  logger()->info("configuration reloaded from {} ({} VMs){}", cfg_.path, cfg_.vms.size(),
                 what.empty() ? ", nothing changed" : ": " + what);
  sd_notify(0, "READY=1");
  return changes;
}

std::vector<config::Vm> Daemon::wanted_vms() const {
  std::vector<config::Vm> all = cfg_.vms;
  for (const auto& rv : runtime_->vms()) all.push_back(rv.vm);
  return all;
}

std::vector<const config::Vm*> Daemon::known_vms() const {
  std::vector<const config::Vm*> known;
  for (const auto& v : cfg_.vms) known.push_back(&v);
  for (const auto& r : runtime_->vms()) known.push_back(&r.vm);
  for (const auto& v : vms_.all())
    if (dynamic_cast<const LibvirtVm*>(v.get())) known.push_back(&v->cfg());
  return known;
}

std::string Daemon::claim(const std::string& name) const {
  if (cfg_.find_vm(name)) return "config";
  return runtime_->find(name) || runtime_->holds(name) ? "runtime" : "";
}

// Kept VMs keep their session and state (a failed binding gets a fresh
// start); a changed one is started anew and adopts what QEMU already has; a
// VM that left is no longer managed: its QEMU keeps its macvtaps, but its
// passt processes are stopped, as are those of passt bindings that left or
// changed. libvirt VMs stay as they are unless [libvirt] changed; then the
// source starts anew and adopts what each domain has.
nlohmann::json Daemon::apply_vms(const config::Config& previous) {
  const bool libvirt_changed = !(previous.libvirt == cfg_.libvirt);
  if (libvirt_changed) libvirt_.reset();
  std::vector<std::unique_ptr<ManagedVm>> libvirt_vms;
  if (libvirt_) libvirt_vms = libvirt_->take_vms();
  std::vector<std::unique_ptr<ManagedVm>> old;
  for (auto& v : vms_.all()) old.push_back(std::move(v));
  vms_.clear();
  std::vector<config::Vm> running;
  for (const auto& v : old) running.push_back(v->cfg());
  const auto wanted = wanted_vms();
  const VmPlan plan = plan_vms(running, wanted, previous.daemon.passt != cfg_.daemon.passt, libvirt_changed);
  auto take_old = [&](const std::string& name) {
    auto it = std::find_if(old.begin(), old.end(), [&](const auto& v) { return v && v->name() == name; });
    return it == old.end() ? nullptr : std::unique_ptr<QmpVm>(static_cast<QmpVm*>(it->release()));
  };
  for (size_t i = 0; i < plan.steps.size(); ++i) {
    const VmStep& step = plan.steps[i];
    const std::string origin = runtime_->find(step.name) ? "runtime" : "config";
    std::unique_ptr<QmpVm> was = step.kind == VmStep::Kind::Start ? nullptr : take_old(step.name);
    if (step.kind == VmStep::Kind::Keep) {
      was->set_origin(origin);
      was->restart_failed();
      vms_.add(std::move(was));
      continue;
    }
    // Changed or new: start it anew; passt bindings that did not change keep their passt.
    auto carry = was ? was->take_passts(step.carry) : std::map<std::string, std::unique_ptr<PasstRunner>>{};
    was.reset();
    vms_.add(std::make_unique<QmpVm>(wanted[i], origin, services_, *passt_, std::move(carry))).start();
  }
  for (auto& v : old) {
    if (!v) continue;
    auto* qv = static_cast<QmpVm*>(v.get());
    qv->retire_passts();
    logger()->info("{}: no longer {}, no longer managed{}", v->name(),
                   std::string(v->origin()) == "runtime" ? "registered" : "in the configuration",
                   v->passts().empty() ? "" : " (its passt stopped)");
  }
  old.clear();
  stop_unclaimed_passts();
  if (libvirt_) {
    libvirt_->put_back(std::move(libvirt_vms));
    // A VM that left the config file may be a libvirt domain: look again.
    libvirt_->recheck_claims();
  }
  if (cfg_.libvirt.enabled && !libvirt_) {
    libvirt_ = std::make_unique<LibvirtDomains>(services_, vms_, [this](const std::string& n) { return claim(n); });
    if (auto r = libvirt_->start(); !r) {
      logger()->error("libvirt: {}", r.error().message);
      libvirt_.reset();
    }
  }
  return plan.changes;
}

void Daemon::stop_unclaimed_passts() {
  std::set<std::string> claimed, claimed_vms;
  // A held registration's bindings are not known now: its passt stays.
  for (const auto& h : runtime_->held()) claimed_vms.insert(h.name);
  for (const auto& vm : wanted_vms())
    for (const auto& p : vm.passts) claimed.insert(vm.name + "/" + p.netdev);
  if (const size_t n = passt_->stop_unclaimed(cfg_.daemon.state_dir, claimed, claimed_vms))
    logger()->info("stopped {} passt process{} no binding claims", n, n == 1 ? "" : "es");
}

nlohmann::json Daemon::control_add(const std::string& text) {
  auto added = runtime_->add(text, known_vms(), cfg_.daemon.control_socket);
  if (!added) return refused(added.error().message);
  // The first passt binding there is: find out what the installed passt can do.
  if (!passt_->probed() && std::any_of(added->begin(), added->end(), [](auto& rv) { return !rv.vm.passts.empty(); }))
    passt_->probe(wanted_vms(), cfg_.daemon.passt);
  nlohmann::json changes = apply_vms(cfg_);
  logger()->info("registered at runtime: {}", describe_changes(changes));
  return done(std::move(changes));
}

nlohmann::json Daemon::control_remove(const std::string& name) {
  if (!runtime_->find(name) && !runtime_->holds(name)) {
    if (cfg_.find_vm(name))
      return refused("VM '" + name + "' comes from " + cfg_.path + ", not from relinkctl add: edit the file and reload");
    const ManagedVm* v = vms_.find(name);
    if (v && dynamic_cast<const LibvirtVm*>(v))
      return refused("VM '" + name + "' is a libvirt domain: see [libvirt] domains to stop following it");
    return refused(vms_.no_such_vm(name));
  }
  if (auto r = runtime_->remove(name); !r) return refused(r.error().message);
  nlohmann::json changes = apply_vms(cfg_);
  logger()->info("unregistered at runtime: {}", describe_changes(changes));
  return done(std::move(changes));
}

nlohmann::json Daemon::status() const {
  nlohmann::json vms = nlohmann::json::array();
  for (const auto& vm : vms_.all()) vms.push_back(vm->status());
  nlohmann::json held = nlohmann::json::array();
  for (const auto& h : runtime_->held()) held.push_back({{"name", h.name}, {"origin", "runtime"}, {"error", h.error}});
  return {{"version", 1},
          {"vms", std::move(vms)},
          {"held", std::move(held)},
          {"daemon",
           {{"version", RELINK_VERSION},
            {"config", cfg_.path},
            {"uptime_s", static_cast<double>(monotonic_us() - started_us_) / 1e6},
            {"netlink_overruns", links_ ? links_->overruns() : 0}}},
          {"libvirt", LibvirtDomains::status(libvirt_.get(), cfg_.libvirt)}};
}

int Daemon::run() {
  if (auto r = setup(); !r) {
    logger()->critical("cannot start: {}", r.error().message);
    return 1;
  }
  logger()->info("relinkd {} running: {} VMs{}, control socket {}", RELINK_VERSION, vms_.size(),
                 cfg_.libvirt.enabled ? " and libvirt's domains (" + cfg_.libvirt.uri + ")" : "",
                 cfg_.daemon.control_socket);
  sd_notify(0, "READY=1");
  int r = sd_event_loop(loop_.get());
  // VMs keep their network: relinkd leaves every attachment as it is, and a
  // later relinkd adopts them. A hung libvirtd delays the exit by 2 s at most.
  if (libvirt_) libvirt_->stop(std::chrono::seconds(2));
  libvirt_.reset();
  vms_.clear();
  control_.reset();
  return r < 0 ? 1 : 0;
}

}  // namespace relink::daemon
