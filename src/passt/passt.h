// SPDX-License-Identifier: GPL-2.0-or-later
// passt user-mode backends: modes, what the installed passt supports, and the
// command line relinkd gives it. Pure functions, no processes.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace relink::passt {

enum class Mode {
  StreamServer,  // QEMU listens (-netdev stream,server=on); relinkd connects and runs passt --fd
  StreamClient,  // passt listens (--socket); QEMU connects with its reconnect option (QEMU >= 8.0)
  VhostUser,     // passt --vhost-user on the socket; QEMU's vhost-user netdev reconnects
};

const char* mode_name(Mode m);                      // "stream-server" | "stream-client" | "vhost-user"
std::optional<Mode> parse_mode(std::string_view s);

// The options of the installed passt that relinkd relies on, read from its
// --help text (passt has no machine-readable feature list).
struct Features {
  bool fd = false;          // -F, --fd
  bool socket = false;      // -s, --socket
  bool foreground = false;  // -f, --foreground
  bool vhost_user = false;  // --vhost-user
  std::string version;      // first line of --version, may be "passt unknown version"
};

Features parse_help(std::string_view help_text);

// Why the installed passt cannot serve a binding of `mode`, or nullopt.
std::optional<std::string> unsupported_reason(Mode mode, const Features& f);

// Options relinkd sets itself and a user's `args` must not contain: the
// socket, foreground mode, pidfile and user switch are relinkd's business.
// Returns the reason for the first offending argument, or nullopt.
std::optional<std::string> check_user_args(const std::vector<std::string>& args);
// The same for a binding registered at runtime (relinkctl add), which also
// may not use the options that write files or make sockets at a path of its
// choosing (--pcap, --log-file, --repair-path): those stay in root's file.
std::optional<std::string> check_runtime_args(const std::vector<std::string>& args);

// The fd number a stream-server passt finds its connected socket on.
inline constexpr int kHandedFd = 3;

// The binary to execute for the configured passt: on a CPU with AVX2, passt
// re-executes itself as "<path>.avx2" when that file exists, first thing
// after start (passt's arch.c), which costs a whole exec (about 5 ms here).
// relinkd makes the same choice up front. Otherwise `configured` itself.
std::string exec_path(const std::string& configured);

// argv (argv[0] = passt_path) for one passt of a binding:
//   stream-server: passt -f --fd 3 ARGS...
//   stream-client: passt -f --socket SOCKET ARGS...
//   vhost-user:    passt -f --vhost-user --socket SOCKET ARGS...
std::vector<std::string> build_argv(const std::string& passt_path, Mode mode, const std::string& socket,
                                    const std::vector<std::string>& args);

// passt logs each line to syslog as well; where no syslog daemon listens it
// reports "Failed to send N bytes to syslog" for every line. Such lines are
// noise in relinkd's log.
bool is_syslog_noise(std::string_view line);

// Whether a line passt printed reports a problem. passt puts no level on its
// stderr lines: its start-up banner ("Template interface: ...", "DHCP:", an
// indented detail line each), its warnings about an address family it cannot
// use ("No external routable interface for IPv6") and its errors all look
// alike. Its error messages name the failure ("Failed to bind any port ...",
// "Invalid ...", "Can't ...", "External interface not usable", getopt's
// "unrecognized option"): a line with such a word is a problem. Indented lines
// are details of the line before (the banner's addresses, the QEMU command
// line with the socket path in it) and never are.
bool is_problem_line(std::string_view line);

}  // namespace relink::passt
