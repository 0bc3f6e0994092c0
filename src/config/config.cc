// SPDX-License-Identifier: GPL-2.0-or-later
// Loading relinkd.toml: TOML parsing, defaults and the checks of every key, with FILE:LINE:COL errors.
#include "config/config.h"

#include <sys/stat.h>

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <toml++/toml.h>
#include <variant>

namespace relink::config {
namespace {

// A uid or gid written as digits; -1 is "no id" to the kernel, so it is refused.
std::optional<uint32_t> parse_id(std::string_view s) {
  if (s.empty() || s.find_first_not_of("0123456789") != std::string_view::npos) return std::nullopt;
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size() || v >= 0xffffffffu) return std::nullopt;
  return static_cast<uint32_t>(v);
}

size_t nss_buffer_size(int which) {
  long n = sysconf(which);
  return n > 0 ? static_cast<size_t>(n) : 16384;
}

// getpwnam_r / getpwuid_r / getgrnam_r with a buffer grown on ERANGE.
// Returns 0 with *found set, or an errno. "Not found" is 0 with !*found
// (some NSS modules report it as ENOENT/ESRCH instead).
template <typename Entry, typename Lookup>
int nss_lookup(int size_hint, Lookup lookup, Entry& out, bool& found) {
  std::vector<char> buf(nss_buffer_size(size_hint));
  for (;;) {
    Entry* result = nullptr;
    int rc = lookup(&out, buf.data(), buf.size(), &result);
    if (rc == ERANGE && buf.size() < (size_t{1} << 20)) {
      buf.resize(buf.size() * 2);
      continue;
    }
    found = rc == 0 && result != nullptr;
    if (rc == ENOENT || rc == ESRCH || rc == EBADF || rc == EPERM) rc = 0;
    return rc;
  }
}

struct Ids {
  uid_t uid;
  gid_t gid;
};

// A user's uid and primary gid by name; `key` names the setting in the
// message when there is no such user.
std::variant<Ids, std::string> user_by_name(const std::string& user, const char* key) {
  struct passwd pw {};
  bool found = false;
  int rc = nss_lookup(_SC_GETPW_R_SIZE_MAX,
                      [&](passwd* e, char* b, size_t n, passwd** r) { return getpwnam_r(user.c_str(), e, b, n, r); },
                      pw, found);
  if (rc != 0) return "cannot look up user '" + user + "': " + std::strerror(rc);
  if (!found) return "'" + std::string(key) + "': unknown user '" + user + "'";
  return Ids{pw.pw_uid, pw.pw_gid};
}

// Resolves runas ("user", "uid", "user:group", "uid:gid") to ids. A user
// given without a group runs with its primary group; a bare uid without a
// passwd entry runs with the gid of the same number, as passt's own --runas
// does. Returns the error message on failure.
std::variant<Ids, std::string> resolve_runas(const std::string& runas) {
  const std::string forms = "'runas' must be USER, UID, USER:GROUP or UID:GID, not \"" + runas + "\"";
  auto colon = runas.find(':');
  std::string user = runas.substr(0, colon);
  std::optional<std::string> group;
  if (colon != std::string::npos) group = runas.substr(colon + 1);
  if (user.empty() || (group && (group->empty() || group->find(':') != std::string::npos)) ||
      runas.find('\0') != std::string::npos)
    return forms;

  Ids ids{};
  if (auto uid = parse_id(user)) {
    ids.uid = *uid;
    ids.gid = *uid;
    if (!group) {
      struct passwd pw {};
      bool found = false;
      int rc = nss_lookup(_SC_GETPW_R_SIZE_MAX,
                          [&](passwd* e, char* b, size_t n, passwd** r) { return getpwuid_r(ids.uid, e, b, n, r); },
                          pw, found);
      if (rc != 0) return "cannot look up uid " + user + ": " + std::strerror(rc);
      if (found) ids.gid = pw.pw_gid;
    }
  } else {
    auto pw = user_by_name(user, "runas");
    if (auto* err = std::get_if<std::string>(&pw)) return *err;
    ids = std::get<Ids>(pw);
  }
  if (group) {
    if (auto gid = parse_id(*group)) {
      ids.gid = *gid;
    } else {
      struct group gr {};
      bool found = false;
      int rc = nss_lookup(_SC_GETGR_R_SIZE_MAX,
                          [&](struct group* e, char* b, size_t n, struct group** r) {
                            return getgrnam_r(group->c_str(), e, b, n, r);
                          },
                          gr, found);
      if (rc != 0) return "cannot look up group '" + *group + "': " + std::strerror(rc);
      if (!found) return "'runas': unknown group '" + *group + "'";
      ids.gid = gr.gr_gid;
    }
  }
  if (ids.uid == 0 || ids.gid == 0)
    return "passt never runs as root: 'runas' = \"" + runas + "\" resolves to uid " + std::to_string(ids.uid) +
           ", gid " + std::to_string(ids.gid);
  return ids;
}

// Resolves qemu_user (a user name or a uid) to a uid. A uid needs no
// passwd entry: QEMU may run under a uid the host does not name.
std::variant<uid_t, std::string> resolve_qemu_user(const std::string& user) {
  if (user.empty() || user.find('\0') != std::string::npos || user.find(':') != std::string::npos)
    return "'qemu_user' must be a user name or a uid, not \"" + user + "\"";
  if (auto uid = parse_id(user)) return static_cast<uid_t>(*uid);
  auto pw = user_by_name(user, "qemu_user");
  if (auto* err = std::get_if<std::string>(&pw)) return *err;
  return std::get<Ids>(pw).uid;
}

class Loader {
 public:
  explicit Loader(std::string path) : path_(std::move(path)) {}

  [[noreturn]] void fail(const toml::source_region& where, const std::string& msg) const {
    throw ConfigError(path_ + ":" + std::to_string(where.begin.line) + ":" +
                      std::to_string(where.begin.column) + ": " + msg);
  }
  [[noreturn]] void fail(const toml::node& n, const std::string& msg) const { fail(n.source(), msg); }

  // Rejects keys this version does not know: a typo must not be silently ignored.
  void only_keys(const toml::table& t, std::initializer_list<std::string_view> known,
                 const std::string& where) const {
    for (auto&& [k, v] : t) {
      bool found = false;
      for (auto kk : known) found = found || kk == k.str();
      if (!found) fail(k.source(), "unknown key '" + std::string(k.str()) + "' in " + where);
    }
  }

  std::string get_string(const toml::table& t, std::string_view key, const toml::node& owner,
                         const std::string& where, std::optional<std::string> def = {}) const {
    const toml::node* n = t.get(key);
    if (!n) {
      if (def) return *def;
      fail(owner, where + ": missing required key '" + std::string(key) + "'");
    }
    auto s = n->value<std::string>();
    if (!n->is_string() || !s) fail(*n, "'" + std::string(key) + "' must be a string");
    return *s;
  }

  int64_t get_int(const toml::table& t, std::string_view key, int64_t def, int64_t lo, int64_t hi) const {
    const toml::node* n = t.get(key);
    if (!n) return def;
    if (!n->is_integer()) fail(*n, "'" + std::string(key) + "' must be an integer");
    int64_t v = *n->value<int64_t>();
    if (v < lo || v > hi)
      fail(*n, "'" + std::string(key) + "' must be between " + std::to_string(lo) + " and " +
                   std::to_string(hi) + ", not " + std::to_string(v));
    return v;
  }

  void need_absolute(const toml::table& t, std::string_view key, const std::string& value) const {
    if (value.empty() || value[0] != '/')
      fail(*t.get(key), "'" + std::string(key) + "' must be an absolute path, not \"" + value + "\"");
    if (value.size() >= 108 && key.find("socket") != std::string_view::npos)
      fail(*t.get(key), "'" + std::string(key) + "' is too long for a unix socket path (max 107 bytes)");
  }

  bool get_bool(const toml::table& t, std::string_view key, bool def) const {
    const toml::node* n = t.get(key);
    if (!n) return def;
    if (!n->is_boolean()) fail(*n, "'" + std::string(key) + "' must be true or false");
    return *n->value<bool>();
  }

  Release get_release(const toml::table& t, const toml::node& owner, const std::string& where) const {
    const std::string v = get_string(t, "release", owner, where);
    auto r = parse_release(v);
    if (!r) fail(*t.get("release"), "'release' must be \"on-return\" or \"on-loss\", not \"" + v + "\"");
    return *r;
  }

  // A guest whose software cannot do without its NIC for an outage keeps it
  // (on-return) while the others let it go at once, or the reverse.
  void load_domain_release(Libvirt& lv, const toml::node& node) const {
    const toml::table* t = node.as_table();
    if (!t) fail(node, "'domain_release' must be a table of domain = \"on-return\" | \"on-loss\"");
    for (const auto& [key, value] : *t) {
      auto s = value.value<std::string>();
      auto r = value.is_string() && s ? parse_release(*s) : std::nullopt;
      if (!r)
        fail(value, "domain_release: '" + std::string(key.str()) + "' must be \"on-return\" or \"on-loss\"");
      lv.domain_release[std::string(key.str())] = *r;
    }
  }

  void load_libvirt(Libvirt& lv, const toml::node& node) const {
    const toml::table* t = node.as_table();
    if (!t) fail(node, "'libvirt' must be a table ([libvirt])");
    only_keys(*t,
              {"enabled", "uri", "domains", "pid_dir", "release_timeout", "follow_carrier", "release",
               "domain_release"},
              "[libvirt]");
    lv.enabled = get_bool(*t, "enabled", true);
    lv.uri = get_string(*t, "uri", node, "[libvirt]", lv.uri);
    if (lv.uri.empty()) fail(*t->get("uri"), "'uri' must not be empty (libvirt's default is \"qemu:///system\")");
    lv.pid_dir = get_string(*t, "pid_dir", node, "[libvirt]", lv.pid_dir);
    if (t->get("pid_dir")) need_absolute(*t, "pid_dir", lv.pid_dir);
    lv.release_timeout_ms = static_cast<uint64_t>(get_int(*t, "release_timeout", 10, 1, 600)) * 1000;
    lv.follow_carrier = get_bool(*t, "follow_carrier", lv.follow_carrier);
    if (t->get("release")) lv.release = get_release(*t, node, "[libvirt]");
    if (const toml::node* d = t->get("domain_release")) load_domain_release(lv, *d);
    if (const toml::node* d = t->get("domains")) {
      const toml::array* arr = d->as_array();
      if (!arr) fail(*d, "'domains' must be an array of domain names");
      std::set<std::string> seen;
      for (const toml::node& e : *arr) {
        auto s = e.value<std::string>();
        if (!e.is_string() || !s || s->empty()) fail(e, "each element of 'domains' must be a domain name");
        if (!seen.insert(*s).second) fail(e, "domain '" + *s + "' is listed twice in 'domains'");
        lv.domains.push_back(*s);
      }
    }
  }

  Config load(const toml::table& root) {
    Config cfg;
    cfg.path = path_;
    only_keys(root, {"daemon", "libvirt", "vm", "bridge"}, "the top level");
    if (const toml::node* l = root.get("libvirt")) load_libvirt(cfg.libvirt, *l);
    if (const toml::node* b = root.get("bridge")) load_bridges(cfg.bridges, *b);
    if (const toml::node* d = root.get("daemon")) {
      const toml::table* t = d->as_table();
      if (!t) fail(*d, "'daemon' must be a table ([daemon])");
      only_keys(*t,
                {"control_socket", "state_dir", "node_dir", "log_level", "control_group", "netlink_receive_buffer",
                 "passt", "qemu_binaries"},
                "[daemon]");
      cfg.daemon.control_socket = get_string(*t, "control_socket", *d, "[daemon]", cfg.daemon.control_socket);
      if (t->get("control_socket")) need_absolute(*t, "control_socket", cfg.daemon.control_socket);
      cfg.daemon.state_dir = get_string(*t, "state_dir", *d, "[daemon]", cfg.daemon.state_dir);
      if (t->get("state_dir")) need_absolute(*t, "state_dir", cfg.daemon.state_dir);
      cfg.daemon.node_dir = get_string(*t, "node_dir", *d, "[daemon]", cfg.daemon.node_dir);
      if (t->get("node_dir")) need_absolute(*t, "node_dir", cfg.daemon.node_dir);
      cfg.daemon.log_level = get_string(*t, "log_level", *d, "[daemon]", cfg.daemon.log_level);
      static const std::set<std::string> levels{"trace", "debug", "info", "warn", "error"};
      // The log itself says "warning": take that spelling too.
      if (cfg.daemon.log_level == "warning") cfg.daemon.log_level = "warn";
      if (!levels.count(cfg.daemon.log_level))
        fail(*t->get("log_level"), "'log_level' must be one of trace, debug, info, warn (or warning), error");
      cfg.daemon.control_group = get_string(*t, "control_group", *d, "[daemon]", "");
      cfg.daemon.netlink_receive_buffer = static_cast<size_t>(get_int(
          *t, "netlink_receive_buffer", static_cast<int64_t>(cfg.daemon.netlink_receive_buffer), 4096, int64_t{1} << 30));
      cfg.daemon.passt = get_string(*t, "passt", *d, "[daemon]", cfg.daemon.passt);
      if (t->get("passt")) need_absolute(*t, "passt", cfg.daemon.passt);
      if (const toml::node* q = t->get("qemu_binaries")) {
        const toml::array* arr = q->as_array();
        if (!arr || arr->empty()) fail(*q, "'qemu_binaries' must be a non-empty array of absolute paths or patterns");
        cfg.daemon.qemu_binaries.clear();
        for (const toml::node& e : *arr) {
          auto s = e.value<std::string>();
          if (!e.is_string() || !s || s->empty() || (*s)[0] != '/')
            fail(e, "each element of 'qemu_binaries' must be an absolute path or pattern (\"/usr/bin/qemu-system-*\")");
          cfg.daemon.qemu_binaries.push_back(*s);
        }
      }
    }
    if (const toml::node* v = root.get("vm")) {
      const toml::array* arr = v->as_array();
      if (!arr) fail(*v, "'vm' must be an array of tables ([[vm]])");
      // Where each name, socket and MAC was first seen, to point at it.
      std::map<std::string, toml::source_position> vm_names, macvtap_names, qmp_paths;
      std::map<MacAddress, toml::source_position> macs;
      auto at = [](const toml::source_position& p) {
        return " (first at line " + std::to_string(p.line) + ", column " + std::to_string(p.column) + ")";
      };
      for (const toml::node& vn : *arr) {
        const toml::table* vt = vn.as_table();
        if (!vt) fail(vn, "each [[vm]] entry must be a table");
        cfg.vms.push_back(load_vm(vn, *vt));
        Vm& vm = cfg.vms.back();
        if (auto [it, fresh] = vm_names.emplace(vm.name, vt->get("name")->source().begin); !fresh)
          fail(*vt->get("name"), "duplicate VM name '" + vm.name + "'" + at(it->second));
        if (auto [it, fresh] = qmp_paths.emplace(vm.qmp, vt->get("qmp")->source().begin); !fresh)
          fail(*vt->get("qmp"), "QMP socket '" + vm.qmp + "' is already used by another VM" + at(it->second));
        const toml::array* bindings = (*vt)["macvtap"].as_array();
        for (size_t i = 0; i < vm.macvtaps.size(); ++i) {
          const toml::node& bn = *bindings->get(i);
          auto& b = vm.macvtaps[i];
          if (auto [it, fresh] = macvtap_names.emplace(b.macvtap, bn.source().begin); !fresh)
            fail(bn, "macvtap name '" + b.macvtap + "' is used by two bindings" + at(it->second));
          const toml::node* mac_node = bn.as_table() ? bn.as_table()->get("mac") : nullptr;
          const toml::node& mn = mac_node ? *mac_node : bn;
          if (auto [it, fresh] = macs.emplace(b.mac, mn.source().begin); !fresh)
            fail(mn, "MAC " + format_mac(b.mac) + " is used by two bindings" + at(it->second));
        }
      }
      check_taps(cfg, *arr);
      // After all VMs: a passt socket must not be any VM's QMP socket either.
      std::set<std::string> passt_sockets;
      for (size_t vi = 0; vi < cfg.vms.size(); ++vi) {
        const Vm& vm = cfg.vms[vi];
        if (vm.passts.empty()) continue;
        const toml::array* bindings = (*arr->get(vi)->as_table())["passt"].as_array();
        for (size_t i = 0; i < vm.passts.size(); ++i) {
          const toml::node& sn = *bindings->get(i)->as_table()->get("socket");
          const std::string& sock = vm.passts[i].socket;
          if (!passt_sockets.insert(sock).second)
            fail(sn, "passt socket '" + sock + "' is used by two [[vm.passt]] bindings");
          if (qmp_paths.count(sock)) fail(sn, "passt socket '" + sock + "' is also a VM's QMP socket");
          if (sock == cfg.daemon.control_socket)
            fail(sn, "passt socket '" + sock + "' is also relinkd's control socket");
        }
      }
    }
    return cfg;
  }

  // [bridge.NAME] tables.
  void load_bridges(std::vector<Bridge>& out, const toml::node& node) const {
    const toml::table* t = node.as_table();
    if (!t) fail(node, "'bridge' must be a table of bridges ([bridge.br0])");
    for (auto&& [k, v] : *t) {
      const std::string name(k.str());
      const std::string where = "[bridge." + name + "]";
      if (!valid_ifname(name))
        fail(k.source(), where + ": the bridge's name must be an interface name (1-15 characters, no '/', ':' or spaces)");
      const toml::table* bt = v.as_table();
      if (!bt) fail(v, "'bridge." + name + "' must be a table (" + where + ")");
      only_keys(*bt, {"follow_taps"}, where);
      Bridge b;
      b.name = name;
      b.follow_taps = get_bool(*bt, "follow_taps", b.follow_taps);
      out.push_back(std::move(b));
    }
  }

  // A tap belongs to one binding: a second one would fight over it.
  void check_taps(const Config& cfg, const toml::array& vms) const {
    std::map<std::string, std::string> owner;  // tap -> VM
    for (size_t vi = 0; vi < cfg.vms.size(); ++vi) {
      const Vm& vm = cfg.vms[vi];
      if (vm.taps.empty()) continue;
      const toml::array* bindings = (*vms.get(vi)->as_table())["tap"].as_array();
      for (size_t i = 0; i < vm.taps.size(); ++i) {
        const toml::node& tn = *bindings->get(i)->as_table()->get("tap");
        auto [it, fresh] = owner.emplace(vm.taps[i].tap, vm.name);
        if (!fresh)
          fail(tn, "tap '" + vm.taps[i].tap + "' is bound twice (VM '" + it->second + "' and VM '" + vm.name + "')");
        for (const auto& m : vm.macvtaps)
          if (m.macvtap == vm.taps[i].tap || m.parent == vm.taps[i].tap)
            fail(tn, "tap '" + vm.taps[i].tap + "' is also a macvtap or a macvtap's parent in VM '" + vm.name + "'");
      }
    }
  }

  TapBinding load_tap(const Vm& vm, const toml::node& bn, const toml::table& t) const {
    only_keys(t, {"tap", "bridge"}, "[[vm.tap]]");
    const std::string where = "[[vm.tap]] of VM '" + vm.name + "'";
    TapBinding b;
    b.tap = get_string(t, "tap", bn, where);
    if (!valid_ifname(b.tap))
      fail(*t.get("tap"), "'tap' must be an interface name (1-15 characters, no '/', ':' or spaces)");
    b.bridge = get_string(t, "bridge", bn, where);
    if (!valid_ifname(b.bridge))
      fail(*t.get("bridge"), "'bridge' must be an interface name (1-15 characters, no '/', ':' or spaces)");
    if (b.tap == b.bridge) fail(*t.get("bridge"), "'bridge' must not be the tap itself");
    return b;
  }

  Vm load_vm(const toml::node& vn, const toml::table& t) {
    only_keys(t, {"name", "qmp", "qemu_user", "macvtap", "passt", "tap"}, "[[vm]]");
    Vm vm;
    vm.name = get_string(t, "name", vn, "[[vm]]");
    if (vm.name.empty() || vm.name.size() > 64 ||
        vm.name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") !=
            std::string::npos)
      fail(*t.get("name"), "VM name '" + vm.name + "' must be 1-64 characters of letters, digits, '_', '.', '-'");
    // The name is a directory name under state_dir (passt pidfiles).
    if (vm.name == "." || vm.name == "..")
      fail(*t.get("name"), "VM name '" + vm.name + "' is not allowed");
    vm.qmp = get_string(t, "qmp", vn, "[[vm]] '" + vm.name + "'");
    need_absolute(t, "qmp", vm.qmp);
    if (const toml::node* qu = t.get("qemu_user")) {
      vm.qemu_user = get_string(t, "qemu_user", vn, "[[vm]] '" + vm.name + "'");
      auto qemu_uid = resolve_qemu_user(vm.qemu_user);
      if (auto* err = std::get_if<std::string>(&qemu_uid)) fail(*qu, *err);
      vm.qemu_uid = std::get<uid_t>(qemu_uid);
    }
    if (const toml::node* m = t.get("macvtap")) {
      const toml::array* arr = m->as_array();
      if (!arr) fail(*m, "'macvtap' must be an array of tables ([[vm.macvtap]])");
      std::set<std::string> nics;
      for (const toml::node& bn : *arr) {
        const toml::table* bt = bn.as_table();
        if (!bt) fail(bn, "each [[vm.macvtap]] entry must be a table");
        vm.macvtaps.push_back(load_macvtap(vm, bn, *bt));
        if (!nics.insert(vm.macvtaps.back().nic).second)
          fail(*bt->get("nic"), "NIC '" + vm.macvtaps.back().nic + "' is bound twice in VM '" + vm.name + "'");
      }
    }
    if (const toml::node* tp = t.get("tap")) {
      const toml::array* arr = tp->as_array();
      if (!arr) fail(*tp, "'tap' must be an array of tables ([[vm.tap]])");
      for (const toml::node& bn : *arr) {
        const toml::table* bt = bn.as_table();
        if (!bt) fail(bn, "each [[vm.tap]] entry must be a table");
        vm.taps.push_back(load_tap(vm, bn, *bt));
      }
    }
    if (const toml::node* p = t.get("passt")) {
      const toml::array* arr = p->as_array();
      if (!arr) fail(*p, "'passt' must be an array of tables ([[vm.passt]])");
      std::set<std::string> netdevs;
      for (const toml::node& bn : *arr) {
        const toml::table* bt = bn.as_table();
        if (!bt) fail(bn, "each [[vm.passt]] entry must be a table");
        vm.passts.push_back(load_passt(vm, bn, *bt));
        const std::string& netdev = vm.passts.back().netdev;
        if (!netdevs.insert(netdev).second)
          fail(*bt->get("netdev"), "netdev '" + netdev + "' is bound twice in VM '" + vm.name + "'");
        // relinkd owns the netdev ids "<nic>.tapN" and "<nic>.uplinkN" of a
        // macvtap binding, and its wiring uses "<nic>.port".
        for (const auto& m : vm.macvtaps)
          if (netdev.rfind(m.nic + ".", 0) == 0)
            fail(*bt->get("netdev"), "netdev '" + netdev + "' collides with the ids of [[vm.macvtap]] NIC '" + m.nic +
                                         "' (\"" + m.nic + ".*\" belongs to that binding)");
      }
    }
    return vm;
  }

  PasstBinding load_passt(const Vm& vm, const toml::node& bn, const toml::table& t) {
    only_keys(t, {"netdev", "mode", "socket", "args", "runas"}, "[[vm.passt]]");
    const std::string where = "[[vm.passt]] of VM '" + vm.name + "'";
    PasstBinding b;
    b.netdev = get_string(t, "netdev", bn, where);
    if (!valid_qemu_id(b.netdev))
      fail(*t.get("netdev"), "'netdev' must be a QEMU netdev id: a letter, then letters, digits, '-', '.', '_'");
    std::string mode = get_string(t, "mode", bn, where, passt::mode_name(b.mode));
    auto m = passt::parse_mode(mode);
    if (!m)
      fail(*t.get("mode"), "'mode' must be one of " + std::string(passt::mode_name(passt::Mode::StreamServer)) + ", " +
                               passt::mode_name(passt::Mode::StreamClient) + ", " +
                               passt::mode_name(passt::Mode::VhostUser) + ", not \"" + mode + "\"");
    b.mode = *m;
    b.socket = get_string(t, "socket", bn, where);
    need_absolute(t, "socket", b.socket);
    if (const toml::node* a = t.get("args")) {
      const toml::array* arr = a->as_array();
      if (!arr) fail(*a, "'args' must be an array of strings");
      for (const toml::node& e : *arr) {
        auto s = e.value<std::string>();
        if (!e.is_string() || !s) fail(e, "each element of 'args' must be a string");
        if (s->find('\0') != std::string::npos) fail(e, "an element of 'args' contains a NUL character");
        b.args.push_back(*s);
      }
      if (auto why = passt::check_user_args(b.args)) {
        // Point at the element that makes the list invalid: the shortest
        // prefix refused for the same reason ends with it.
        const toml::node* at = a;
        for (size_t n = 1; n <= b.args.size(); ++n) {
          std::vector<std::string> prefix(b.args.begin(), b.args.begin() + static_cast<std::ptrdiff_t>(n));
          if (passt::check_user_args(prefix) == why) {
            at = arr->get(n - 1);
            break;
          }
        }
        fail(*at, "'args': " + *why);
      }
    }
    b.runas = get_string(t, "runas", bn, where, b.runas);
    auto ids = resolve_runas(b.runas);
    if (auto* err = std::get_if<std::string>(&ids)) {
      // The default "nobody" has no value node to point at.
      if (const toml::node* r = t.get("runas")) fail(*r, *err);
      fail(bn, where + ": " + *err);
    }
    b.uid = std::get<Ids>(ids).uid;
    b.gid = std::get<Ids>(ids).gid;
    return b;
  }

  MacvtapBinding load_macvtap(const Vm& vm, const toml::node& bn, const toml::table& t) {
    only_keys(t,
              {"nic", "parent", "mode", "mac", "queues", "attach", "hub", "macvtap", "parent_mac", "follow_carrier",
               "release_timeout", "release"},
              "[[vm.macvtap]]");
    const std::string where = "[[vm.macvtap]] of VM '" + vm.name + "'";
    MacvtapBinding b;
    b.nic = get_string(t, "nic", bn, where);
    // Ids of the netdevs relinkd adds are "<nic>.tap<generation>"; QEMU ids
    // must start with a letter and use letters, digits, '-', '.', '_'.
    if (!valid_qemu_id(b.nic) || b.nic.size() > 100)
      fail(*t.get("nic"), "'nic' must be a QEMU device id: a letter, then letters, digits, '-', '.', '_'");
    b.parent = get_string(t, "parent", bn, where);
    if (!valid_ifname(b.parent))
      fail(*t.get("parent"), "'parent' must be an interface name (1-15 characters, no '/', ':' or spaces)");
    std::string mode = get_string(t, "mode", bn, where, "bridge");
    auto m = macvtap::parse_mode(mode);
    if (!m) fail(*t.get("mode"), "'mode' must be one of vepa, bridge, private, passthru, not \"" + mode + "\"");
    b.mode = *m;
    std::string mac = get_string(t, "mac", bn, where);
    auto parsed = parse_mac(mac);
    if (!parsed) fail(*t.get("mac"), "'mac' must look like 52:54:00:12:34:56, not \"" + mac + "\"");
    if ((*parsed)[0] & 1) fail(*t.get("mac"), "'mac' " + mac + " is a multicast address");
    if (*parsed == MacAddress{}) fail(*t.get("mac"), "'mac' must not be all zero");
    b.mac = *parsed;
    b.queues = static_cast<unsigned>(get_int(t, "queues", 1, 1, 256));
    std::string attach = get_string(t, "attach", bn, where, "hub");
    if (attach == "hub") b.attach = AttachMode::Hub;
    else if (attach == "replug") b.attach = AttachMode::Replug;
    else fail(*t.get("attach"), "'attach' must be \"hub\" or \"replug\", not \"" + attach + "\"");
    // A hubport carries one queue: the tap behind it can have only one.
    if (b.attach == AttachMode::Hub && b.queues != 1)
      fail(*t.get("queues"), "attach = \"hub\" supports only queues = 1; use attach = \"replug\" for multiqueue");
    if (b.attach == AttachMode::Replug && t.get("hub"))
      fail(*t.get("hub"), "'hub' is for attach = \"hub\" only");
    b.hub = static_cast<unsigned>(get_int(t, "hub", 0, 0, 2147483647));
    if (const toml::node* n = t.get("release_timeout")) {
      if (b.attach != AttachMode::Replug) fail(*n, "'release_timeout' is for attach = \"replug\" only");
      b.release_timeout_ms = static_cast<uint64_t>(get_int(t, "release_timeout", 10, 1, 600)) * 1000;
    }
    if (const toml::node* n = t.get("release")) {
      if (b.attach != AttachMode::Replug)
        fail(*n, "'release' is for attach = \"replug\" only (a hub NIC is never released)");
      b.release = get_release(t, bn, where);
    }
    if (const toml::node* n = t.get("follow_carrier")) {
      auto v = n->value<bool>();
      if (!n->is_boolean() || !v) fail(*n, "'follow_carrier' must be true or false");
      b.follow_carrier = *v;
    }
    if (t.get("parent_mac")) {
      std::string pm = get_string(t, "parent_mac", bn, where);
      auto pmac = parse_mac(pm);
      if (!pmac || *pmac == MacAddress{} || ((*pmac)[0] & 1))
        fail(*t.get("parent_mac"), "'parent_mac' must be a unicast MAC like a0:36:9f:00:00:01, not \"" + pm + "\"");
      b.parent_mac = *pmac;
    }
    b.macvtap = get_string(t, "macvtap", bn, where, default_macvtap_name(vm.name, b.nic));
    if (!valid_ifname(b.macvtap))
      fail(*t.get("macvtap"), "'macvtap' must be an interface name (1-15 characters, no '/', ':' or spaces)");
    if (kernel_style_macvtap_name(b.macvtap))
      fail(*t.get("macvtap"), "'macvtap' = \"" + b.macvtap +
                                  "\": names like macvtapN and macvlanN are libvirt's, which deletes such "
                                  "interfaces when its domains stop; choose another name");
    if (b.macvtap == b.parent) fail(*t.get("macvtap"), "'macvtap' must not be the parent's name");
    return b;
  }

 private:
  std::string path_;
};

}  // namespace

const char* attach_mode_name(AttachMode m) {
  switch (m) {
    case AttachMode::Replug: return "replug";
    case AttachMode::Libvirt: return "libvirt";
    case AttachMode::Hub: break;
  }
  return "hub";
}

const char* release_name(Release r) { return r == Release::OnLoss ? "on-loss" : "on-return"; }

std::optional<Release> parse_release(std::string_view s) {
  if (s == "on-return") return Release::OnReturn;
  if (s == "on-loss") return Release::OnLoss;
  return std::nullopt;
}

bool kernel_style_macvtap_name(const std::string& name) {
  for (const char* prefix : {"macvtap", "macvlan"}) {
    const std::string p = prefix;
    if (name.size() > p.size() && name.compare(0, p.size(), p) == 0 &&
        name.find_first_not_of("0123456789", p.size()) == std::string::npos)
      return true;
  }
  return false;
}

Release Libvirt::release_of(const std::string& domain) const {
  auto it = domain_release.find(domain);
  return it != domain_release.end() ? it->second : release;
}

const Vm* Config::find_vm(const std::string& name) const {
  for (const auto& vm : vms)
    if (vm.name == name) return &vm;
  return nullptr;
}

bool valid_qemu_id(const std::string& id) {
  if (id.empty() || !std::isalpha(static_cast<unsigned char>(id[0]))) return false;
  for (char c : id)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') return false;
  return true;
}

bool valid_ifname(const std::string& name) {
  if (name.empty() || name.size() > 15 || name == "." || name == "..") return false;
  for (char c : name)
    if (c == '/' || c == ':' || std::isspace(static_cast<unsigned char>(c)) || !std::isprint(static_cast<unsigned char>(c)))
      return false;
  return true;
}

std::string default_macvtap_name(const std::string& vm, const std::string& nic) {
  uint32_t h = 2166136261u;  // FNV-1a
  for (char c : vm + "/" + nic) {
    h ^= static_cast<uint8_t>(c);
    h *= 16777619u;
  }
  char buf[16];
  std::snprintf(buf, sizeof buf, "rl%08x", h);
  return buf;
}

Config load_string(const std::string& text, const std::string& path) {
  toml::table root;
  try {
    root = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    throw ConfigError(path + ":" + std::to_string(e.source().begin.line) + ":" +
                      std::to_string(e.source().begin.column) + ": " + std::string(e.description()));
  }
  return Loader(path).load(root);
}

Config load_file(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) < 0) throw ConfigError(path + ": cannot read the file: " + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) throw ConfigError(path + ": is a directory, not a configuration file");
  if (!S_ISREG(st.st_mode)) throw ConfigError(path + ": is not a regular file");
  std::ifstream f(path);
  if (!f) throw ConfigError(path + ": cannot read the file: " + std::strerror(errno));
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string text = ss.str();
  if (text.find_first_not_of(" \t\r\n") == std::string::npos)
    throw ConfigError(path + ": the file is empty (see contrib/relinkd.toml for an example)");
  return load_string(text, path);
}

Result<RunasIds> resolve_runas_ids(const std::string& runas) {
  auto ids = resolve_runas(runas);
  if (auto* err = std::get_if<std::string>(&ids)) return Error{ENOENT, *err};
  return RunasIds{std::get<Ids>(ids).uid, std::get<Ids>(ids).gid};
}

}  // namespace relink::config
