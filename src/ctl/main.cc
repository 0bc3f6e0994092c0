// SPDX-License-Identifier: GPL-2.0-or-later
// relinkctl: talks to relinkd over its control socket.
//
// Exit status: 0 done; 1 relinkd refused or the operation failed; 2 relinkd
// cannot be reached, or the command line is wrong.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>
#include <toml++/toml.h>

#include "config/config.h"
#include "ctl/control_client.h"
#include "ctl/render.h"
#include "util/unique_fd.h"
#include "util/unix_addr.h"

namespace {

using nlohmann::json;
constexpr int kDone = 0, kFailed = 1, kUnreachable = 2, kUsage = 2;

const std::vector<std::pair<const char*, const char*>> kCommands = {
    {"status", "show every VM and binding (or one VM's)"},
    {"reattach", "reattach a VM's bindings now and wait for the outcome"},
    {"reload", "make relinkd re-read its configuration; prints what changed"},
    {"add", "register VMs at runtime (TOML [[vm]] tables, or options)"},
    {"remove", "drop a VM registered at runtime"},
    {"qemu-args", "print the QEMU arguments a VM's bindings need"},
    {"monitor", "print state changes as they happen"},
    {"metrics", "print relinkd's figures in Prometheus text format"},
    {"help", "show help for relinkctl or one of its commands"},
};

struct Connection {
  std::string socket;
};

// The socket path: --socket, else the config file's, else the default. A
// config file named with --config must be readable and valid; the default
// one may be missing (relinkctl run by a user on a host without it).
int resolve_socket(std::string& sock, const std::string& config_path, bool config_given) {
  if (!sock.empty()) return kDone;
  if (!config_given && access(config_path.c_str(), F_OK) < 0) {
    sock = relink::config::Daemon{}.control_socket;
    return kDone;
  }
  try {
    sock = relink::config::load_file(config_path).daemon.control_socket;
    return kDone;
  } catch (const relink::config::ConfigError& e) {
    if (config_given) {
      std::cerr << "relinkctl: " << e.what() << "\n";
      return kUsage;
    }
    std::cerr << "relinkctl: warning: " << e.what() << "; using the default control socket\n";
    sock = relink::config::Daemon{}.control_socket;
    return kDone;
  }
}

std::string explain_unreachable(const std::string& sock, const relink::Error& e) {
  if (e.code == EACCES || e.code == EPERM)
    return "cannot connect to " + sock +
           ": permission denied (the control socket is for root and the members of relinkd's control_group)";
  if (e.code == ENOENT || e.code == ECONNREFUSED)
    return "cannot connect to " + sock + ": relinkd is not running (or uses another socket: see --socket, --config)";
  return e.message;
}

// One request; on success *result holds the reply's result.
int request(const Connection& c, const json& req, json* result) {
  auto reply = relink::ctl::control_request(c.socket, req);
  if (!reply) {
    std::cerr << "relinkctl: " << explain_unreachable(c.socket, reply.error()) << "\n";
    return kUnreachable;
  }
  if (!reply->value("ok", false)) {
    std::string err = "request failed";
    if (auto it = reply->find("error"); it != reply->end() && it->is_string()) err = it->get<std::string>();
    if (err == "permission denied")
      err = "relinkd refused: permission denied (the control socket is for root and the members of control_group)";
    std::cerr << "relinkctl: " << err << "\n";
    return kFailed;
  }
  if (result) {
    auto it = reply->find("result");
    *result = it != reply->end() ? *it : json::object();
  }
  return kDone;
}

int cmd_status(const Connection& c, const std::string& vm, bool as_json) {
  json st;
  if (int rc = request(c, {{"command", "status"}}, &st)) return rc;
  if (!vm.empty()) {
    json only = json::array();
    for (const auto& v : st.value("vms", json::array()))
      if (v.value("name", "") == vm) only.push_back(v);
    if (only.empty()) {
      std::cerr << "relinkctl: no VM named '" << vm << "'\n";
      return kFailed;
    }
    st["vms"] = only;
  }
  if (as_json) std::cout << st.dump(2) << "\n";
  else std::cout << relink::ctl::render_status(st, {relink::ctl::want_colour(STDOUT_FILENO)}, vm);
  return kDone;
}

// What names a binding within its VM, by kind.
const char* id_key(const json& b) {
  const std::string kind = b.value("kind", "");
  return kind == "passt" ? "netdev" : kind == "bridge" ? "tap" : "nic";
}

// A pointer into `st` (never into a copy of a part of it).
const json* find_binding(const json& st, const std::string& vm, const json& want) {
  auto vms = st.find("vms");
  if (vms == st.end() || !vms->is_array()) return nullptr;
  for (const auto& v : *vms) {
    if (!v.is_object() || v.value("name", "") != vm) continue;
    auto bindings = v.find("bindings");
    if (bindings == v.end() || !bindings->is_array()) continue;
    for (const auto& b : *bindings) {
      if (!b.is_object()) continue;
      const char* key = id_key(b);
      if (b.value("kind", "") == want.value("kind", "") && b.value(key, "") == want.value(key, "")) return &b;
    }
  }
  return nullptr;
}

int cmd_reattach(const Connection& c, const std::string& vm, const std::string& nic, bool wait, double timeout_s) {
  json req = {{"command", "reattach"}, {"vm", vm}};
  if (!nic.empty()) req["nic"] = nic;
  json res;
  if (int rc = request(c, req, &res)) return rc;
  const json list = res.value("bindings", json::array());
  if (!wait) {
    for (const auto& b : list)
      std::cout << vm << "/" << b.value(id_key(b), "") << ": reattach started\n";
    return kDone;
  }
  // Poll until every binding has moved past its old generation and come to
  // rest (attached, running, or why not).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<long>(timeout_s * 1000));
  std::set<size_t> pending;
  for (size_t i = 0; i < list.size(); ++i) pending.insert(i);
  int rc = kDone;
  while (!pending.empty()) {
    json st;
    if (int r = request(c, {{"command", "status"}}, &st)) return r;
    for (auto it = pending.begin(); it != pending.end();) {
      const json& want = list[*it];
      const std::string kind = want.value("kind", "");
      const std::string name = vm + "/" + want.value(id_key(want), "");
      const json* b = find_binding(st, vm, want);
      if (!b) {
        std::cout << name << ": no longer managed\n";
        rc = kFailed;
        it = pending.erase(it);
        continue;
      }
      const std::string state = b->value("state", "");
      const uint64_t gen = b->value("generation", uint64_t{0});
      const bool moved = gen > want.value("generation_before", uint64_t{0});
      // A binding that waits for its parent or its VM gets no new generation,
      // nor does a tap relinkd could not put back (the reply says why).
      const bool refused = want.contains("error") && want["error"].is_string();
      const bool stuck = !moved && (state == "waiting-parent" || state == "vm-offline" || refused);
      if (!(moved && relink::ctl::settled_state(want.value("kind", ""), state)) && !stuck) {
        ++it;
        continue;
      }
      if (state == "attached" || state == "running") {
        const char* key = kind == "passt" ? "last_recovery_ms" : kind == "bridge" ? "last_rejoin_ms" : "last_reattach_ms";
        std::cout << name << ": " << state << ", generation " << gen;
        if (auto t = b->find(key); t != b->end() && t->is_number()) {
          char buf[48];
          std::snprintf(buf, sizeof buf, ", in %.2f ms", t->get<double>());
          std::cout << buf;
        }
        std::cout << "\n";
      } else {
        std::string why = b->contains("last_error") && (*b)["last_error"].is_string()
                              ? (*b)["last_error"].get<std::string>()
                              : "";
        if (state == "waiting-parent") why = "its parent " + b->value("parent", std::string("?")) + " is not there";
        if (refused) why = want["error"].get<std::string>();
        std::cout << name << ": " << state << (why.empty() ? "" : ": " + why) << "\n";
        rc = kFailed;
      }
      it = pending.erase(it);
    }
    if (pending.empty()) break;
    if (std::chrono::steady_clock::now() > deadline) {
      for (size_t i : pending) {
        const json* b = find_binding(st, vm, list[i]);
        std::cout << vm << "/" << list[i].value(id_key(list[i]), "") << ": still " << (b ? b->value("state", "?") : "?") << " after " << timeout_s << " s\n";
      }
      return kFailed;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return rc;
}

// "nic=net0,parent=eth0,queues=2" -> a TOML table (integers and booleans
// typed; passt's args split on spaces).
bool spec_to_table(const std::string& spec, toml::table& t, std::string& err) {
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      err = "'" + item + "' is not KEY=VALUE";
      return false;
    }
    const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    if (key == "args") {
      toml::array a;
      std::stringstream words(value);
      for (std::string w; words >> w;) a.push_back(w);
      t.insert_or_assign(key, std::move(a));
    } else if (value == "true" || value == "false") {
      t.insert_or_assign(key, value == "true");
    } else if (!value.empty() && value.find_first_not_of("0123456789") == std::string::npos && value.size() < 10) {
      t.insert_or_assign(key, static_cast<int64_t>(std::stoll(value)));
    } else {
      t.insert_or_assign(key, value);
    }
  }
  return true;
}

int cmd_add(const Connection& c, const std::string& file_or_vm, const std::string& qmp, const std::string& qemu_user,
            const std::vector<std::string>& macvtaps, const std::vector<std::string>& passts) {
  std::string text;
  if (!qmp.empty()) {
    // Options: one VM named by the positional argument.
    if (file_or_vm.empty()) {
      std::cerr << "relinkctl: add --qmp needs the VM's name: relinkctl add VM --qmp PATH ...\n";
      return kUsage;
    }
    toml::table vm{{"name", file_or_vm}, {"qmp", qmp}};
    if (!qemu_user.empty()) vm.insert_or_assign("qemu_user", qemu_user);
    for (const auto& [key, specs] : {std::pair{"macvtap", &macvtaps}, std::pair{"passt", &passts}}) {
      if (specs->empty()) continue;
      toml::array arr;
      for (const auto& s : *specs) {
        toml::table t;
        std::string err;
        if (!spec_to_table(s, t, err)) {
          std::cerr << "relinkctl: --" << key << " " << s << ": " << err << "\n";
          return kUsage;
        }
        arr.push_back(std::move(t));
      }
      vm.insert_or_assign(key, std::move(arr));
    }
    toml::table root{{"vm", toml::array{std::move(vm)}}};
    std::stringstream out;
    out << root;
    text = out.str();
  } else if (!macvtaps.empty() || !passts.empty() || !qemu_user.empty()) {
    std::cerr << "relinkctl: add --macvtap/--passt/--qemu-user need --qmp (the VM's QMP socket)\n";
    return kUsage;
  } else {
    std::stringstream in;
    if (file_or_vm.empty() || file_or_vm == "-") {
      if (isatty(STDIN_FILENO)) std::cerr << "relinkctl: reading [[vm]] tables from stdin (end with Ctrl-D)\n";
      in << std::cin.rdbuf();
    } else {
      std::ifstream f(file_or_vm);
      if (!f) {
        std::cerr << "relinkctl: cannot read " << file_or_vm << ": " << std::strerror(errno) << "\n";
        return kUsage;
      }
      in << f.rdbuf();
    }
    text = in.str();
  }
  json res;
  if (int rc = request(c, {{"command", "add"}, {"toml", text}}, &res)) return rc;
  std::cout << "registered: " << relink::ctl::render_changes(res) << "\n";
  return kDone;
}

int cmd_monitor(const Connection& c, bool as_json) {
  auto addr = relink::unix_addr(c.socket);
  if (!addr) {
    std::cerr << "relinkctl: " << addr.error().message << "\n";
    return kUsage;
  }
  relink::UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd || connect(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) < 0) {
    std::cerr << "relinkctl: " << explain_unreachable(c.socket, relink::Error::last("cannot connect to " + c.socket))
              << "\n";
    return kUnreachable;
  }
  const std::string req = json{{"command", "monitor"}}.dump() + "\n";
  if (send(fd.get(), req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    std::cerr << "relinkctl: send to " << c.socket << ": " << std::strerror(errno) << "\n";
    return kUnreachable;
  }
  const relink::ctl::Style style{relink::ctl::want_colour(STDOUT_FILENO)};
  std::string buf;
  bool first = true;
  for (;;) {
    char chunk[65536];
    const ssize_t n = recv(fd.get(), chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      std::cerr << "relinkctl: relinkd closed the monitor connection\n";
      return kUnreachable;
    }
    buf.append(chunk, static_cast<size_t>(n));
    for (size_t nl; (nl = buf.find('\n')) != std::string::npos;) {
      const json line = json::parse(buf.substr(0, nl), nullptr, false);
      buf.erase(0, nl + 1);
      if (line.is_discarded() || !line.is_object()) continue;
      if (first) {
        // The reply to the request itself.
        first = false;
        if (!line.value("ok", false)) {
          std::cerr << "relinkctl: " << line.value("error", std::string("monitor refused")) << "\n";
          return kFailed;
        }
        if (!as_json) std::cerr << "relinkctl: watching relinkd's state changes (Ctrl-C to stop)\n";
        continue;
      }
      if (as_json) std::cout << line.dump() << std::endl;
      else std::cout << relink::ctl::render_event(line, style) << std::endl;
    }
  }
}

// The command line: CLI11's options and subcommands, and where they land.
struct Options {
  std::string sock, config_path = relink::config::kDefaultPath;
  CLI::Option* config_opt = nullptr;
  bool as_json = false, no_wait = false;
  std::string vm, nic, file_or_vm, qmp, qemu_user, help_on;
  double timeout_s = 30;
  std::vector<std::string> macvtap_specs, passt_specs;
  CLI::App *status = nullptr, *reattach = nullptr, *reload = nullptr, *add = nullptr, *remove = nullptr,
           *qemu_args = nullptr, *monitor = nullptr, *metrics = nullptr, *help = nullptr;
};

void add_options(CLI::App& app, Options& o) {
  app.set_version_flag("-V,--version", std::string("relinkctl ") + RELINK_VERSION);
  app.require_subcommand(0, 1);
  app.fallthrough();
  app.add_option("-s,--socket", o.sock, "control socket (default: from the config file, else /run/relinkd/control.sock)")
      ->type_name("PATH");
  o.config_opt = app.add_option("-c,--config", o.config_path, "relinkd configuration file to read the socket path from")
                     ->type_name("FILE")
                     ->capture_default_str();

  o.status = app.add_subcommand("status", kCommands[0].second);
  o.status->add_option("VM", o.vm, "only this VM");
  o.status->add_flag("--json", o.as_json, "print one JSON object (\"version\": 1)");

  o.reattach = app.add_subcommand("reattach", std::string(kCommands[1].second) +
                                                  " (restarts passt, resets a failed binding)");
  o.reattach->add_option("VM", o.vm, "VM name")->required();
  o.reattach->add_option("NIC", o.nic, "NIC id of a macvtap binding, or netdev id of a passt binding (default: all)");
  o.reattach->add_flag("--no-wait", o.no_wait, "return once relinkd has started the reattach");
  o.reattach->add_option("--timeout", o.timeout_s, "seconds to wait for the outcome")->capture_default_str()->check(
      CLI::Range(0.1, 3600.0));

  o.reload = app.add_subcommand("reload", kCommands[2].second);

  o.add = app.add_subcommand("add", kCommands[3].second);
  o.add->footer(
      "Registrations survive a relinkd restart (kept in state_dir/runtime.toml); status shows them as runtime.\n"
      "  relinkctl add vms.toml              [[vm]] tables, same keys as relinkd.toml\n"
      "  relinkctl add - < vms.toml           the same from stdin\n"
      "  relinkctl add web2 --qmp /run/qemu/web2.qmp --qemu-user libvirt-qemu \\\n"
      "      --macvtap nic=nic0,parent=eth0,mac=52:54:00:12:34:57,attach=replug \\\n"
      "      --passt 'netdev=net1,socket=/run/relinkd/web2-net1.sock,args=--tcp-ports 8080'");
  o.add->add_option("FILE|VM", o.file_or_vm, "TOML file (- or nothing: stdin), or the VM's name with --qmp");
  o.add->add_option("--qmp", o.qmp, "the VM's QMP socket (registers one VM from options)")->type_name("PATH");
  o.add->add_option("--qemu-user", o.qemu_user, "the user the VM's QEMU runs as (qemu_user; default root)")
      ->type_name("USER");
  o.add->add_option("--macvtap", o.macvtap_specs, "a [[vm.macvtap]] binding as KEY=VALUE,... (repeatable)")
      ->type_name("SPEC");
  o.add->add_option("--passt", o.passt_specs, "a [[vm.passt]] binding as KEY=VALUE,... (args: space-separated)")
      ->type_name("SPEC");

  o.remove = app.add_subcommand("remove", kCommands[4].second);
  o.remove->add_option("VM", o.vm, "VM name")->required();

  o.qemu_args = app.add_subcommand("qemu-args", std::string(kCommands[5].second) +
                                                    " (-qmp, -netdev, -device), ready to paste");
  o.qemu_args->add_option("VM", o.vm, "VM name")->required();

  o.monitor = app.add_subcommand("monitor", kCommands[6].second);
  o.monitor->add_flag("--json", o.as_json, "one JSON object per line");

  o.metrics = app.add_subcommand("metrics", kCommands[7].second);

  o.help = app.add_subcommand("help", kCommands[8].second);
  o.help->add_option("COMMAND", o.help_on, "command to explain");
}

// An unknown command gets its own message rather than CLI11's.
bool known_command(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-s" || a == "--socket" || a == "-c" || a == "--config") {
      ++i;
      continue;
    }
    if (a.empty() || a[0] == '-') continue;
    bool known = false;
    for (const auto& [name, what] : kCommands) known = known || a == name;
    if (!known) {
      std::cerr << "relinkctl: unknown command '" << a << "'; commands:";
      for (const auto& [name, what] : kCommands) std::cerr << " " << name;
      std::cerr << " (see relinkctl --help)\n";
      return false;
    }
    break;
  }
  return true;
}

int cmd_help(CLI::App& app, const std::string& help_on) {
  if (help_on.empty()) {
    std::cout << app.help();
    return kDone;
  }
  for (auto* sub : app.get_subcommands({}))
    if (sub->get_name() == help_on) {
      std::cout << sub->help();
      return kDone;
    }
  std::cerr << "relinkctl: no command '" << help_on << "'\n";
  return kUsage;
}

// A command whose reply is a text to print as it is, or a change report.
int cmd_text(const Connection& c, const json& req) {
  json res;
  if (int rc = request(c, req, &res)) return rc;
  std::cout << res.value("text", std::string());
  return kDone;
}
int cmd_changes(const Connection& c, const json& req, const char* what) {
  json res;
  if (int rc = request(c, req, &res)) return rc;
  std::cout << what << ": " << relink::ctl::render_changes(res) << "\n";
  return kDone;
}

int run_command(const Options& o, const Connection& c) {
  if (o.status->parsed()) return cmd_status(c, o.vm, o.as_json);
  if (o.reattach->parsed()) return cmd_reattach(c, o.vm, o.nic, !o.no_wait, o.timeout_s);
  if (o.reload->parsed()) return cmd_changes(c, {{"command", "reload"}}, "reloaded");
  if (o.add->parsed()) return cmd_add(c, o.file_or_vm, o.qmp, o.qemu_user, o.macvtap_specs, o.passt_specs);
  if (o.remove->parsed()) return cmd_changes(c, {{"command", "remove"}, {"vm", o.vm}}, "removed");
  if (o.qemu_args->parsed()) return cmd_text(c, {{"command", "qemu-args"}, {"vm", o.vm}});
  if (o.monitor->parsed()) return cmd_monitor(c, o.as_json);
  if (o.metrics->parsed()) return cmd_text(c, {{"command", "metrics"}});
  return kUsage;
}

}  // namespace

int run(int argc, char** argv);

int main(int argc, char** argv) {
  // A reply of an unexpected shape (another relinkd version) is an error to
  // report, not a crash.
  try {
    return run(argc, argv);
  } catch (const nlohmann::json::exception& e) {
    std::cerr << "relinkctl: relinkd's reply is not what this relinkctl understands: " << e.what() << "\n";
    return kFailed;
  }
}

int run(int argc, char** argv) {
  CLI::App app{"relinkctl: status and control of relinkd, which keeps QEMU guests' macvtap NICs and passt\n"
               "backends connected while host links come and go.\n"
               "Exit status: 0 done, 1 refused or failed, 2 relinkd unreachable or usage error.",
               "relinkctl"};
  Options o;
  add_options(app, o);
  if (!known_command(argc, argv)) return kUsage;
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kDone : kUsage;
  }
  if (o.help->parsed()) return cmd_help(app, o.help_on);
  if (app.get_subcommands().empty()) {
    std::cerr << app.help() << "\nrelinkctl: a command is required\n";
    return kUsage;
  }
  if (int rc = resolve_socket(o.sock, o.config_path, o.config_opt->count() > 0)) return rc;
  return run_command(o, Connection{o.sock});
}
