#include "passt/pidfile.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <nlohmann/json.hpp>

#include "util/unique_fd.h"

namespace relink::passt {
namespace {

// Reads a whole (small) file; nullopt with errno set on failure.
std::optional<std::string> slurp(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return std::nullopt;
  std::string out;
  char buf[4096];
  while (true) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return std::nullopt;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
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

// The fields of /proc/PID/stat after "pid (comm)". comm may hold spaces and
// ')' itself, so the fields start after the *last* ')'.
struct StatFields {
  char state = '?';
  uint64_t start_time = 0;
};

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
  const std::string dir = proc_root + "/" + std::to_string(pid);
  auto stat = slurp(dir + "/stat");
  if (!stat) return std::nullopt;
  auto fields = parse_stat(*stat);
  if (!fields) return std::nullopt;

  ProcInfo info;
  info.pid = pid;
  info.start_time = fields->start_time;
  // 'X' (dead) is only ever seen in a race with the final reap; 'x' is its
  // spelling in kernels before 3.13.
  info.zombie = fields->state == 'Z' || fields->state == 'X' || fields->state == 'x';
  // A zombie (or a kernel thread) has no exe: leave it empty.
  char buf[PATH_MAX];
  ssize_t n = ::readlink((dir + "/exe").c_str(), buf, sizeof buf);
  if (n > 0 && static_cast<size_t>(n) < sizeof buf) info.exe.assign(buf, static_cast<size_t>(n));
  return info;
}

const char* adoption_name(Adoption a) {
  switch (a) {
    case Adoption::Adopt: return "adopt";
    case Adoption::Dead: return "dead";
    case Adoption::Reused: return "reused";
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

}  // namespace

Adoption decide_adoption(const PidRecord& rec, const std::optional<ProcInfo>& now) {
  if (!now || now->zombie) return Adoption::Dead;
  if (now->start_time != rec.start_time) return Adoption::Reused;
  if (!same_binary(rec.exe, now->exe)) return Adoption::Reused;
  return Adoption::Adopt;
}

Result<void> write_pidfile(const std::string& path, const PidRecord& rec) {
  nlohmann::json j = {
      {"pid", rec.pid},
      {"start_time", rec.start_time},
      {"exe", rec.exe},
      {"generation", rec.generation},
      {"mode", rec.mode},
      {"socket", rec.socket},
  };
  const std::string text = j.dump() + "\n";
  const std::string tmp = path + ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return Error::last("create " + tmp);
  // An old temporary file keeps its mode through O_TRUNC, and the umask
  // could strip bits: set 0600 explicitly.
  if (::fchmod(fd.get(), 0600) != 0 || !write_all(fd.get(), text)) {
    Error err = Error::last("write " + tmp);
    ::unlink(tmp.c_str());
    return err;
  }
  if (::close(fd.release()) != 0) {
    Error err = Error::last("close " + tmp);
    ::unlink(tmp.c_str());
    return err;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    Error err = Error::last("rename " + tmp + " to " + path);
    ::unlink(tmp.c_str());
    return err;
  }
  return ok();
}

Result<PidRecord> read_pidfile(const std::string& path) {
  auto text = slurp(path);
  if (!text) return Error::last("pidfile " + path);
  auto j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return malformed(path, "not valid JSON");
  if (!j.is_object()) return malformed(path, "not a JSON object");

  PidRecord rec;
  auto it = j.find("pid");
  if (it == j.end() || !it->is_number_integer()) return malformed(path, "no integer \"pid\"");
  int64_t pid = it->get<int64_t>();
  if (pid <= 0 || pid > INT_MAX) return malformed(path, "\"pid\" out of range: " + std::to_string(pid));
  rec.pid = static_cast<pid_t>(pid);

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
    if (!it->is_number_unsigned()) return malformed(path, "\"generation\" is not an unsigned integer");
    rec.generation = it->get<uint64_t>();
  }
  for (auto [key, field] : {std::pair{"mode", &rec.mode}, std::pair{"socket", &rec.socket}}) {
    it = j.find(key);
    if (it == j.end()) continue;
    if (!it->is_string()) return malformed(path, "\"" + std::string(key) + "\" is not a string");
    *field = it->get<std::string>();
  }
  return rec;
}

void remove_pidfile(const std::string& path) { ::unlink(path.c_str()); }

}  // namespace relink::passt
