// SPDX-License-Identifier: GPL-2.0-or-later
// Writing and reading passt pidfiles, reading /proc, and whether a recorded process may be adopted.
#include "passt/pidfile.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "passt/passt.h"
#include "util/trusted_dir.h"
#include "util/unique_fd.h"
#include "util/untrusted.h"

namespace relink::passt {
namespace {

// Reads at most `max` bytes of a file that should be smaller; nullopt with
// errno set on failure. *truncated is set when there was more.
std::optional<std::string> read_bounded(int fd, size_t max, bool* truncated = nullptr) {
  std::string out;
  char buf[4096];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return std::nullopt;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > max) {
      out.resize(max);
      if (truncated) *truncated = true;
      break;
    }
  }
  return out;
}

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// "Uid:\t0\t0\t0\t0" lines of /proc/PID/status.
template <typename Id>
bool parse_ids(std::string_view status, std::string_view key, std::array<Id, 4>& out) {
  size_t at = 0;
  while (at < status.size()) {
    size_t eol = status.find('\n', at);
    std::string_view line = status.substr(at, eol == std::string_view::npos ? std::string_view::npos : eol - at);
    at = eol == std::string_view::npos ? status.size() : eol + 1;
    if (line.substr(0, key.size()) != key) continue;
    line.remove_prefix(key.size());
    for (auto& id : out) {
      while (!line.empty() && (line.front() == '\t' || line.front() == ' ')) line.remove_prefix(1);
      auto [p, ec] = std::from_chars(line.data(), line.data() + line.size(), id);
      if (ec != std::errc{}) return false;
      line.remove_prefix(static_cast<size_t>(p - line.data()));
    }
    return true;
  }
  return false;
}

std::vector<std::string> split_cmdline(std::string_view raw) {
  std::vector<std::string> out;
  while (!raw.empty()) {
    size_t nul = raw.find('\0');
    out.emplace_back(raw.substr(0, nul));
    if (nul == std::string_view::npos) break;
    raw.remove_prefix(nul + 1);
  }
  return out;
}

// The fields of /proc/PID/stat after "pid (comm)". comm may hold spaces and
// ')' itself, so the fields start after the *last* ')'.
struct StatFields {
  char state = '?';
  uint64_t flags = 0;  // field 9, the kernel's PF_* bits
  uint64_t start_time = 0;
};

constexpr uint64_t kPfExiting = 0x4;  // PF_EXITING, include/linux/sched.h

std::optional<StatFields> parse_stat(std::string_view stat) {
  size_t close = stat.rfind(')');
  if (close == std::string_view::npos) return std::nullopt;
  std::string_view rest = stat.substr(close + 1);
  // rest holds fields 3 (state) .. 52, separated by single spaces.
  StatFields out;
  int field = 2;
  while (!rest.empty()) {
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    if (rest.empty()) break;
    size_t end = rest.find_first_of(" \n");
    std::string_view tok = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view{} : rest.substr(end);
    ++field;
    if (field == 3) {
      if (tok.size() != 1) return std::nullopt;
      out.state = tok[0];
    } else if (field == 9) {
      auto [p, ec] = std::from_chars(tok.data(), tok.data() + tok.size(), out.flags);
      if (ec != std::errc{} || p != tok.data() + tok.size()) return std::nullopt;
    } else if (field == 22) {
      auto [p, ec] = std::from_chars(tok.data(), tok.data() + tok.size(), out.start_time);
      if (ec != std::errc{} || p != tok.data() + tok.size()) return std::nullopt;
      return out;
    }
  }
  return std::nullopt;  // truncated
}

Error malformed(const std::string& path, const std::string& why) {
  return Error{EINVAL, "pidfile " + path + ": " + why};
}

}  // namespace

std::optional<ProcInfo> read_proc(pid_t pid, const std::string& proc_root) {
  if (pid <= 0) return std::nullopt;
  // Every file is read through one fd of /proc/PID: it stays bound to that
  // process, so the pieces cannot come from two processes that had the pid
  // one after the other.
  UniqueFd dir(::open((proc_root + "/" + std::to_string(pid)).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return std::nullopt;
  auto read_at = [&](const char* name, size_t max) -> std::optional<std::string> {
    UniqueFd fd(::openat(dir.get(), name, O_RDONLY | O_CLOEXEC));
    if (!fd) return std::nullopt;
    return read_bounded(fd.get(), max);
  };
  auto stat = read_at("stat", 4096);
  if (!stat) return std::nullopt;
  auto fields = parse_stat(*stat);
  if (!fields) return std::nullopt;

  ProcInfo info;
  info.pid = pid;
  info.start_time = fields->start_time;
  // 'X' (dead) is only ever seen in a race with the final reap; 'x' is its
  // spelling in kernels before 3.13.
  info.zombie = fields->state == 'Z' || fields->state == 'X' || fields->state == 'x';
  info.exiting = (fields->flags & kPfExiting) != 0;
  // A zombie (or a kernel thread) has no exe: leave it empty.
  char buf[PATH_MAX];
  ssize_t n = ::readlinkat(dir.get(), "exe", buf, sizeof buf);
  if (n > 0 && static_cast<size_t>(n) < sizeof buf) info.exe.assign(buf, static_cast<size_t>(n));
  if (auto status = read_at("status", 16 * 1024))
    info.ids_known = parse_ids(*status, "Uid:", info.uids) && parse_ids(*status, "Gid:", info.gids);
  if (auto cmdline = read_at("cmdline", 64 * 1024)) info.cmdline = split_cmdline(*cmdline);
  return info;
}

const char* adoption_name(Adoption a) {
  switch (a) {
    case Adoption::Adopt: return "adopt";
    case Adoption::Dead: return "dead";
    case Adoption::Reused: return "reused";
    case Adoption::Outdated: return "outdated";
    case Adoption::Foreign: return "foreign";
  }
  return "?";
}

namespace {

// Whether `now` (a /proc/PID/exe) is the binary recorded as `recorded`. On a
// CPU with AVX2, passt re-executes itself as "<its exe>.avx2" first thing
// (passt's arch.c), so the exe seen right after relinkd's exec may change a
// moment later. A package upgrade appends " (deleted)".
bool same_binary(const std::string& recorded, const std::string& now) {
  if (recorded.empty() || now.empty()) return false;  // an unreadable exe proves nothing
  for (const std::string& name : {recorded, recorded + ".avx2"}) {
    if (now == name || now == name + " (deleted)") return true;
  }
  return false;
}

// Whether the process is the one the record describes (not a later process
// that got the pid).
bool same_process(const PidRecord& rec, const ProcInfo& now) {
  if (now.start_time != rec.start_time || !same_binary(rec.exe, now.exe)) return false;
  if (!rec.argv.empty() && now.cmdline != rec.argv) return false;
  if (rec.uid >= 0 && (!now.ids_known || now.uids[0] != rec.uid)) return false;
  if (rec.gid >= 0 && (!now.ids_known || now.gids[0] != rec.gid)) return false;
  return true;
}

}  // namespace

Adoption decide_adoption(const PidRecord& rec, const std::optional<ProcInfo>& now) {
  if (!now || now->zombie) return Adoption::Dead;
  return same_process(rec, *now) ? Adoption::Adopt : Adoption::Reused;
}

Adoption decide_adoption(const PidRecord& rec, const std::optional<ProcInfo>& now, const Expected& want) {
  if (!now || now->zombie) return Adoption::Dead;
  if (!same_process(rec, *now)) return Adoption::Reused;
  // Start time and exe anyone can read, and a pidfile is only as good as
  // its directory: what proves the process relinkd's is what a local user
  // cannot give a process of another user, all of its ids those of runas
  // (relinkd's passt drops to them with setresuid/setresgid)...
  if (!now->ids_known) return Adoption::Foreign;
  for (uid_t u : now->uids)
    if (u != want.uid) return Adoption::Foreign;
  for (gid_t g : now->gids)
    if (g != want.gid) return Adoption::Foreign;
  // ... running the command line relinkd builds for this binding.
  if (want.argv.empty() || rec.socket != want.socket) return Adoption::Foreign;
  if (now->cmdline == want.argv) return rec.mode == want.mode ? Adoption::Adopt : Adoption::Outdated;
  // Another command line: relinkd's older passt for this binding only if the
  // record names that command line (same_process checked it is the one
  // running).
  return rec.argv.empty() ? Adoption::Foreign : Adoption::Outdated;
}

namespace {

// Whether `argv` is what build_argv makes for the record's mode and socket,
// with any user options after it.
bool built_by_relinkd(const PidRecord& rec) {
  auto mode = parse_mode(rec.mode);
  if (!mode || rec.argv.empty()) return false;
  const std::vector<std::string> head = build_argv(rec.argv[0], *mode, rec.socket, {});
  return rec.argv.size() >= head.size() && std::equal(head.begin(), head.end(), rec.argv.begin());
}

}  // namespace

Adoption decide_orphan(const PidRecord& rec, const std::optional<ProcInfo>& now) {
  if (!now || now->zombie) return Adoption::Dead;
  if (rec.argv.empty() || rec.uid <= 0 || rec.gid <= 0 || !built_by_relinkd(rec))
    return decide_adoption(rec, now) == Adoption::Reused ? Adoption::Reused : Adoption::Foreign;
  const Expected want{static_cast<uid_t>(rec.uid), static_cast<gid_t>(rec.gid), rec.argv, rec.mode, rec.socket};
  const Adoption a = decide_adoption(rec, now, want);
  return a == Adoption::Outdated ? Adoption::Foreign : a;
}

Result<PidRecord> parse_pidfile(std::string_view text, const std::string& path) {
  // relinkd writes a flat object with one array: anything deeper is not its.
  auto parsed = untrusted::parse_json(text, untrusted::JsonLimits{kMaxPidfileBytes, 4});
  if (!parsed) return malformed(path, "not valid JSON (" + parsed.error().message + ")");
  const nlohmann::json& j = *parsed;
  if (!j.is_object()) return malformed(path, "not a JSON object");

  PidRecord rec;
  auto it = j.find("pid");
  if (it == j.end() || !it->is_number_integer()) return malformed(path, "no integer \"pid\"");
  // Non-negative numbers parse as unsigned, negative ones as signed.
  const bool in_range = it->is_number_unsigned() && it->get<uint64_t>() > 0 && it->get<uint64_t>() <= INT_MAX;
  if (!in_range) return malformed(path, "\"pid\" out of range: " + it->dump());
  rec.pid = static_cast<pid_t>(it->get<uint64_t>());

  it = j.find("start_time");
  if (it == j.end() || !it->is_number_unsigned()) return malformed(path, "no unsigned \"start_time\"");
  rec.start_time = it->get<uint64_t>();

  it = j.find("exe");
  if (it == j.end() || !it->is_string() || it->get_ref<const std::string&>().empty()) {
    return malformed(path, "no \"exe\"");
  }
  rec.exe = it->get<std::string>();

  // Descriptive fields: optional, but of the right type when present.
  it = j.find("generation");
  if (it != j.end()) {
    // The engine counts on from it: keep far from wrapping around.
    if (!it->is_number_unsigned() || it->get<uint64_t>() > (uint64_t{1} << 53))
      return malformed(path, "\"generation\" is not an unsigned integer up to 2^53");
    rec.generation = it->get<uint64_t>();
  }
  for (auto [key, field] : {std::pair{"mode", &rec.mode}, std::pair{"socket", &rec.socket}}) {
    it = j.find(key);
    if (it == j.end()) continue;
    if (!it->is_string()) return malformed(path, "\"" + std::string(key) + "\" is not a string");
    *field = it->get<std::string>();
  }
  for (auto [key, field] : {std::pair{"uid", &rec.uid}, std::pair{"gid", &rec.gid}}) {
    it = j.find(key);
    if (it == j.end()) continue;
    // (uid_t)-1 means "no change" to the kernel, never a user.
    if (!it->is_number_unsigned() || it->get<uint64_t>() >= UINT32_MAX)
      return malformed(path, "\"" + std::string(key) + "\" is not a user or group id");
    *field = static_cast<int64_t>(it->get<uint64_t>());
  }
  it = j.find("argv");
  if (it != j.end()) {
    if (!it->is_array() || it->empty()) return malformed(path, "\"argv\" is not a non-empty array of strings");
    for (const auto& a : *it) {
      // A NUL could never match /proc/PID/cmdline, which NULs separate.
      if (!a.is_string() || a.get_ref<const std::string&>().find('\0') != std::string::npos)
        return malformed(path, "\"argv\" is not a non-empty array of strings");
      rec.argv.push_back(a.get<std::string>());
    }
  }
  return rec;
}

namespace {

Error untrusted_file(const std::string& shown, const struct stat& st, const std::string& why) {
  char mode[8];
  std::snprintf(mode, sizeof mode, "0%03o", static_cast<unsigned>(st.st_mode & 07777));
  return Error{EPERM, "pidfile " + shown + " (owner uid " + std::to_string(st.st_uid) + ", mode " + mode + ") " +
                          why + ": relinkd reads only pidfiles it wrote itself, ignoring it"};
}

}  // namespace

Result<void> write_pidfile_at(int dirfd, const std::string& name, const PidRecord& rec, const std::string& shown) {
  nlohmann::json j = {
      {"pid", rec.pid},
      {"start_time", rec.start_time},
      {"exe", rec.exe},
      {"generation", rec.generation},
      {"mode", rec.mode},
      {"socket", rec.socket},
  };
  if (rec.uid >= 0) j["uid"] = rec.uid;
  if (rec.gid >= 0) j["gid"] = rec.gid;
  if (!rec.argv.empty()) j["argv"] = rec.argv;
  const std::string text = untrusted::dump_json(j) + "\n";
  if (text.size() > kMaxPidfileBytes)
    return Error{E2BIG, "pidfile " + shown + ": the record is over " + std::to_string(kMaxPidfileBytes) + " bytes"};
  const std::string tmp = name + ".tmp";
  const std::string shown_tmp = shown + ".tmp";
  // A fresh file: an old temporary may be a hard link to anything.
  if (::unlinkat(dirfd, tmp.c_str(), 0) != 0 && errno != ENOENT) return Error::last("remove " + shown_tmp);
  UniqueFd fd(::openat(dirfd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return Error::last("create " + shown_tmp);
  // The umask could strip bits, and a setgid directory lend its group.
  if (::fchmod(fd.get(), 0600) != 0 || !write_all(fd.get(), text)) {
    Error err = Error::last("write " + shown_tmp);
    ::unlinkat(dirfd, tmp.c_str(), 0);
    return err;
  }
  if (::close(fd.release()) != 0) {
    Error err = Error::last("close " + shown_tmp);
    ::unlinkat(dirfd, tmp.c_str(), 0);
    return err;
  }
  if (::renameat(dirfd, tmp.c_str(), dirfd, name.c_str()) != 0) {
    Error err = Error::last("rename " + shown_tmp + " to " + shown);
    ::unlinkat(dirfd, tmp.c_str(), 0);
    return err;
  }
  return ok();
}

Result<PidRecord> read_pidfile_at(int dirfd, const std::string& name, const std::string& shown) {
  // O_NONBLOCK: a FIFO in its place must not hang the daemon in open().
  UniqueFd fd(::openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!fd) {
    const int err = errno;
    struct stat st {};
    if (err == ELOOP && ::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0)
      return untrusted_file(shown, st, "is a symlink");
    return Error::from_errno(err, "pidfile " + shown);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Error::last("stat pidfile " + shown);
  if (std::string why = trusted::why_untrusted_file(st, ::geteuid()); !why.empty())
    return untrusted_file(shown, st, why);
  bool truncated = false;
  auto text = read_bounded(fd.get(), kMaxPidfileBytes, &truncated);
  if (!text) return Error::last("pidfile " + shown);
  if (truncated) return untrusted_file(shown, st, "is over " + std::to_string(kMaxPidfileBytes) + " bytes");
  return parse_pidfile(*text, shown);
}

Result<void> remove_pidfile_at(int dirfd, const std::string& name, const std::string& shown) {
  if (::unlinkat(dirfd, name.c_str(), 0) != 0 && errno != ENOENT) return Error::last("remove pidfile " + shown);
  return ok();
}

namespace {

struct DirAndName {
  UniqueFd dir;
  std::string name;
};

// The directory holding `path`, opened without following a symlink in its
// last component and checked like state_dir's own subdirectories.
Result<DirAndName> open_parent(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos || slash + 1 == path.size()) return Error{EINVAL, "not a file path: " + path};
  const std::string dir = slash == 0 ? "/" : path.substr(0, slash);
  DirAndName out;
  out.name = path.substr(slash + 1);
  out.dir.reset(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!out.dir) return Error::last("open " + dir);
  struct stat st {};
  if (::fstat(out.dir.get(), &st) != 0) return Error::last("stat " + dir);
  if (std::string why = trusted::why_untrusted_dir(st, ::geteuid()); !why.empty())
    return Error{EPERM, "pidfile directory " + dir + " " + why};
  return out;
}

}  // namespace

Result<void> write_pidfile(const std::string& path, const PidRecord& rec) {
  auto d = open_parent(path);
  if (!d) return d.error();
  return write_pidfile_at(d->dir.get(), d->name, rec, path);
}

Result<PidRecord> read_pidfile(const std::string& path) {
  auto d = open_parent(path);
  if (!d) return d.error();
  return read_pidfile_at(d->dir.get(), d->name, path);
}

void remove_pidfile(const std::string& path) {
  if (auto d = open_parent(path)) (void)remove_pidfile_at(d->dir.get(), d->name, path);
}

}  // namespace relink::passt
