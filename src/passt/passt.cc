// SPDX-License-Identifier: GPL-2.0-or-later
// passt's modes, its --help parsed for features, user args checked, and the argv relinkd gives it.
#include "passt/passt.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>

namespace relink::passt {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// The long option names an option line of `passt --help` declares, e.g.
// "  -s, --socket PATH\tUNIX domain socket path" -> {"socket"}. An option line
// starts with '-'; its option tokens run up to the first token that is not an
// option (the argument placeholder or the description). Example lines inside
// descriptions ("        -t 22\t\tForward local port 22") name no long option.
std::vector<std::string_view> declared_long_options(std::string_view line) {
  std::vector<std::string_view> names;
  line = trim(line);
  while (!line.empty() && line.front() == '-') {
    size_t end = 0;
    while (end < line.size() && !is_space(line[end])) ++end;
    std::string_view tok = line.substr(0, end);
    if (!tok.empty() && tok.back() == ',') tok.remove_suffix(1);
    if (tok.size() > 2 && tok.substr(0, 2) == "--") {
      tok.remove_prefix(2);
      tok = tok.substr(0, tok.find('='));  // "--opt=ARG" style
      if (!tok.empty()) names.push_back(tok);
    }
    line = trim(line.substr(end));
  }
  return names;
}

// Options relinkd sets itself (or that break supervision), by long name.
struct Forbidden {
  std::string_view long_name;
  char short_name;  // 0: none
  const char* why;
};
constexpr std::array kForbidden = {
    Forbidden{"foreground", 'f', "is set by relinkd"},
    Forbidden{"fd", 'F', "is set by relinkd"},
    Forbidden{"socket", 's', "is set by relinkd"},
    Forbidden{"socket-path", 0, "is set by relinkd"},  // newer passt's alias of --socket
    Forbidden{"vhost-user", 0, "is set by relinkd"},
    Forbidden{"pid", 'P', "is relinkd's business (it keeps its own pidfile)"},
    Forbidden{"runas", 0, "is set by relinkd (use the binding's runas)"},
    Forbidden{"one-off", '1', "would end passt after one client"},
};

// Options that write files or make sockets at a path of the caller's
// choosing (as passt's user): fine in root's config file, refused in a
// runtime registration. --pid and --runas are refused everywhere (above).
constexpr std::array kRuntimeForbidden = {
    Forbidden{"pcap", 'p', "writes a file at a path of the registration's choosing; it is allowed only in "
                           "relinkd's configuration file"},
    Forbidden{"log-file", 'l', "writes a file at a path of the registration's choosing; it is allowed only in "
                               "relinkd's configuration file"},
    Forbidden{"repair-path", 0, "makes a socket at a path of the registration's choosing; it is allowed only in "
                                "relinkd's configuration file"},
};

// passt's short options that take an argument: in "-t10001" the rest of the
// token is the argument, not more flags.
constexpr std::string_view kShortWithArgument = "lpPmanMgioDStuFsHITU";

std::string refusal(const Forbidden& f, std::string_view given) {
  std::string name = "--" + std::string(f.long_name);
  std::string msg = "'" + name + "'";
  if (given != name) msg += " (given as '" + std::string(given) + "')";
  return msg + " " + f.why + "; remove it from args";
}

}  // namespace

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::StreamServer: return "stream-server";
    case Mode::StreamClient: return "stream-client";
    case Mode::VhostUser: return "vhost-user";
  }
  return "?";
}

std::optional<Mode> parse_mode(std::string_view s) {
  for (Mode m : {Mode::StreamServer, Mode::StreamClient, Mode::VhostUser}) {
    if (s == mode_name(m)) return m;
  }
  return std::nullopt;
}

Features parse_help(std::string_view help_text) {
  Features f;
  while (!help_text.empty()) {
    size_t nl = help_text.find('\n');
    std::string_view line = help_text.substr(0, nl);
    help_text = nl == std::string_view::npos ? std::string_view{} : help_text.substr(nl + 1);
    if (is_syslog_noise(line)) continue;
    for (std::string_view name : declared_long_options(line)) {
      if (name == "fd") f.fd = true;
      else if (name == "socket") f.socket = true;
      else if (name == "foreground") f.foreground = true;
      else if (name == "vhost-user") f.vhost_user = true;
    }
  }
  return f;
}

std::optional<std::string> unsupported_reason(Mode mode, const Features& f) {
  auto missing = [&](const char* option, const char* why) {
    return "the installed passt has no " + std::string(option) + " option (" + mode_name(mode) +
           " needs " + why + ")";
  };
  switch (mode) {
    case Mode::StreamServer:
      if (!f.fd) return missing("--fd", "it");
      break;
    case Mode::StreamClient:
      if (!f.socket) return missing("--socket", "it");
      break;
    case Mode::VhostUser:
      if (!f.vhost_user) return missing("--vhost-user", "passt 2025-01 or newer");
      if (!f.socket) return missing("--socket", "it");
      break;
  }
  return std::nullopt;
}

namespace {

template <size_t N>
std::optional<std::string> check_against(const std::vector<std::string>& args, const std::array<Forbidden, N>& list) {
  for (const std::string& arg : args) {
    std::string_view a = arg;
    if (a.size() > 2 && a.substr(0, 2) == "--") {
      std::string_view name = a.substr(2);
      name = name.substr(0, name.find('='));  // "--fd=3"
      // getopt_long takes any unambiguous prefix of a long name ("--run" is
      // --runas); no option relinkd allows is a prefix of a forbidden one.
      for (const Forbidden& f : list) {
        if (!name.empty() && f.long_name.substr(0, name.size()) == name) return refusal(f, a);
      }
    } else if (a.size() > 1 && a[0] == '-' && a[1] != '-') {
      // A bundle of short flags ("-qf"), possibly ending in one that takes
      // the rest of the token as its argument ("-t10001").
      for (size_t i = 1; i < a.size(); ++i) {
        for (const Forbidden& f : list) {
          if (f.short_name != 0 && a[i] == f.short_name) return refusal(f, a);
        }
        if (kShortWithArgument.find(a[i]) != std::string_view::npos) break;
      }
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> check_user_args(const std::vector<std::string>& args) {
  return check_against(args, kForbidden);
}

std::optional<std::string> check_runtime_args(const std::vector<std::string>& args) {
  if (auto why = check_user_args(args)) return why;
  return check_against(args, kRuntimeForbidden);
}

std::string exec_path(const std::string& configured) {
#if defined(__x86_64__)
  const std::string avx2 = configured + ".avx2";
  struct stat st {};
  if (__builtin_cpu_supports("avx2") && ::stat(avx2.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
      ::access(avx2.c_str(), X_OK) == 0)
    return avx2;
#endif
  return configured;
}

std::vector<std::string> build_argv(const std::string& passt_path, Mode mode, const std::string& socket,
                                    const std::vector<std::string>& args) {
  std::vector<std::string> argv{passt_path, "-f"};
  switch (mode) {
    case Mode::StreamServer:
      argv.insert(argv.end(), {"--fd", std::to_string(kHandedFd)});
      break;
    case Mode::StreamClient:
      argv.insert(argv.end(), {"--socket", socket});
      break;
    case Mode::VhostUser:
      argv.insert(argv.end(), {"--vhost-user", "--socket", socket});
      break;
  }
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

bool is_syslog_noise(std::string_view line) {
  // "Failed to send 31 bytes to syslog"
  constexpr std::string_view kPrefix = "Failed to send ";
  constexpr std::string_view kSuffix = " bytes to syslog";
  line = trim(line);
  if (line.substr(0, kPrefix.size()) != kPrefix) return false;
  line.remove_prefix(kPrefix.size());
  size_t digits = 0;
  while (digits < line.size() && std::isdigit(static_cast<unsigned char>(line[digits]))) ++digits;
  return digits > 0 && line.substr(digits) == kSuffix;
}

bool is_problem_line(std::string_view line) {
  if (line.empty() || line.front() == ' ' || line.front() == '\t') return false;
  // Words of passt's err() and warn() messages (conf.c, tcp.c, util.c, ...)
  // and of getopt's; matched case-insensitively at word starts.
  static constexpr std::string_view kWords[] = {
      "invalid",  "can't",        "cannot",        "couldn't",       "could not",
      "failed",   "failure",      "error",         "unrecognized",   "unknown",
      "conflict", "redundant",    "overlapping",   "multiple",       "not usable",
      "too long", "denied",       "not permitted", "refused",        "no such",
      "mutually exclusive",       "already in use", "requires an argument",
  };
  std::string lower(line);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const std::string_view text(lower);
  for (std::string_view word : kWords) {
    for (size_t pos = text.find(word); pos != std::string_view::npos; pos = text.find(word, pos + 1)) {
      if (pos == 0 || !std::isalnum(static_cast<unsigned char>(text[pos - 1]))) return true;
    }
  }
  return false;
}

}  // namespace relink::passt
