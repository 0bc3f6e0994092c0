// SPDX-License-Identifier: GPL-2.0-or-later
#include "support/libvirt_env.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

namespace relink::test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

// Alive and not a zombie.
bool alive(pid_t pid) {
  if (pid <= 0) return false;
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(f, stat)) return false;
  const size_t close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) return false;
  return stat[close + 2] != 'Z' && stat[close + 2] != 'X';
}

std::string file_id(const struct stat& st) {
  return std::to_string(st.st_ino) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
         std::to_string(st.st_mtim.tv_nsec) + ":" + std::to_string(st.st_size);
}

// The first CPU the test may run on.
int first_allowed_cpu() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) return c;
  return 0;
}

std::string tail(const std::string& s, size_t n) { return s.size() > n ? s.substr(s.size() - n) : s; }

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::trunc);
  f << text;
  if (!f) ADD_FAILURE() << "cannot write " << path;
}

std::string xml_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&':
        o += "&amp;";
        break;
      case '<':
        o += "&lt;";
        break;
      case '>':
        o += "&gt;";
        break;
      case '\'':
        o += "&apos;";
        break;
      case '"':
        o += "&quot;";
        break;
      default:
        o += c;
    }
  }
  return o;
}

std::string shell_quote(const std::string& s) {
  std::string o = "'";
  for (char c : s) {
    if (c == '\'')
      o += "'\\''";
    else
      o += c;
  }
  return o + "'";
}

// Direct children of `self`, from /proc.
std::vector<pid_t> children_of(pid_t self) {
  std::vector<pid_t> out;
  DIR* d = opendir("/proc");
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    char path[300];
    snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    char buf[512];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) continue;
    buf[n] = 0;
    char* p = strrchr(buf, ')');
    if (!p) continue;
    char state = 0;
    int ppid = 0;
    if (sscanf(p + 1, " %c %d", &state, &ppid) == 2 && ppid == self) out.push_back(atoi(e->d_name));
  }
  closedir(d);
  return out;
}

}  // namespace

// A process forked from the test that starts libvirtd on request and is the
// child subreaper of everything below it: libvirt's daemonized QEMUs end up
// as its children, are reaped at once when they exit, and are SIGKILLed
// (with libvirtd) on request or when the test process goes away (EOF on the
// socket) or signals it.
class LibvirtEnv::Reaper {
 public:
  Reaper(const std::vector<std::string>& argv, const std::string& log_path) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      ADD_FAILURE() << "socketpair: " << strerror(errno);
      return;
    }
    // Everything the reaper needs is prepared before fork.
    std::vector<char*> cargv;
    for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    pid_ = fork();
    if (pid_ < 0) {
      ADD_FAILURE() << "fork: " << strerror(errno);
      close(sv[0]);
      close(sv[1]);
      return;
    }
    if (pid_ == 0) run(sv[1], cargv.data(), log_path.c_str());  // never returns
    close(sv[1]);
    fd_ = sv[0];
  }
  ~Reaper() {
    if (fd_ >= 0) close(fd_);  // EOF: the reaper kills what is left and exits
    if (pid_ > 0) {
      int st;
      bool gone = wait_until([&] { return waitpid(pid_, &st, WNOHANG) == pid_; }, 20s, 2ms);
      if (!gone) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &st, 0);
      }
    }
  }
  Reaper(const Reaper&) = delete;
  Reaper& operator=(const Reaper&) = delete;

  pid_t pid() const { return pid_; }

  // Starts libvirtd (the argv given at construction); its pid, or -1.
  pid_t spawn() {
    pid_t child = -1;
    if (!request('S', &child, sizeof child)) return -1;
    return child;
  }
  // SIGKILLs every process below the reaper and reaps them.
  bool kill_all() {
    char ack = 0;
    return request('K', &ack, 1) && ack == 'k';
  }

 private:
  bool request(char cmd, void* reply, size_t len) {
    if (fd_ < 0) return false;
    if (send(fd_, &cmd, 1, MSG_NOSIGNAL) != 1) return false;
    size_t got = 0;
    while (got < len) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 30000) <= 0) return false;
      ssize_t n = recv(fd_, static_cast<char*>(reply) + got, len - got, 0);
      if (n <= 0) return false;
      got += static_cast<size_t>(n);
    }
    return true;
  }

  [[noreturn]] static void run(int fd, char** argv, const char* log_path) {
    const pid_t self = getpid();
    // Keep nothing of the test process's: only the socket.
    if (fd > 3) close_range(3, static_cast<unsigned>(fd) - 1, 0);
    close_range(static_cast<unsigned>(fd) + 1, ~0U, 0);
    // Not in the test's process group: a ^C to the test reaches the test,
    // whose exit (EOF) then makes the reaper clean up.
    setpgid(0, 0);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    sigset_t set;
    sigemptyset(&set);
    for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, s);
    sigprocmask(SIG_BLOCK, &set, nullptr);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    signal(SIGPIPE, SIG_IGN);

    auto reap = [] {
      int st;
      while (waitpid(-1, &st, WNOHANG) > 0) {
      }
    };
    auto kill_all = [&] {
      for (int round = 0; round < 500; ++round) {
        reap();
        auto kids = children_of(self);
        if (kids.empty()) return;
        for (pid_t k : kids) kill(k, SIGKILL);
        usleep(10000);
      }
    };
    for (;;) {
      pollfd p[2] = {{fd, POLLIN, 0}, {sfd, POLLIN, 0}};
      if (poll(p, sfd >= 0 ? 2 : 1, sfd >= 0 ? -1 : 50) < 0 && errno != EINTR) break;
      if (sfd >= 0 && (p[1].revents & POLLIN)) {
        signalfd_siginfo si;
        bool quit = false;
        while (read(sfd, &si, sizeof si) == static_cast<ssize_t>(sizeof si))
          if (si.ssi_signo != SIGCHLD) quit = true;
        if (quit) break;
      }
      reap();
      if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
        char cmd = 0;
        if (read(fd, &cmd, 1) != 1) break;  // the test process is gone
        if (cmd == 'S') {
          pid_t child = fork();
          if (child == 0) {
            sigset_t none;
            sigemptyset(&none);
            sigprocmask(SIG_SETMASK, &none, nullptr);
            signal(SIGPIPE, SIG_DFL);
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            setpgid(0, 0);
            int devnull = open("/dev/null", O_RDONLY);
            int log = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (devnull >= 0) dup2(devnull, 0);
            if (log >= 0) {
              dup2(log, 1);
              dup2(log, 2);
            }
            close_range(3, ~0U, 0);
            execvp(argv[0], argv);
            _exit(127);
          }
          if (write(fd, &child, sizeof child) != static_cast<ssize_t>(sizeof child)) break;
        } else if (cmd == 'K') {
          kill_all();
          if (write(fd, "k", 1) != 1) break;
        }
      }
    }
    kill_all();
    _exit(0);
  }

  int fd_ = -1;
  pid_t pid_ = -1;
};

std::string LibvirtEnv::cache_dir() { return binary_dir() + "/libvirt-cache"; }

LibvirtEnv::LibvirtEnv(const Netns& ns) : ns_(ns), ns_name_(ns.name()), dir_("/tmp/relink-lv-" + random_suffix()) {
  std::error_code ec;
  for (const char* sub : {"etc/libvirt/qemu", "run", "var/lib/libvirt/qemu", "var/log/libvirt/qemu",
                          "var/cache/libvirt/qemu/capabilities"})
    fs::create_directories(dir_ + "/" + sub, ec);
  chmod(dir_.c_str(), 0700);
  write_config();
  // `ip netns exec` gives libvirtd a private mount namespace (and a sysfs of
  // the namespace); the bind mounts are invisible outside it. The shell
  // execs taskset, which execs libvirtd, so the spawned pid is libvirtd's.
  // libvirtd is pinned to one CPU because its QEMU capabilities cache is
  // only valid on the CPU it was probed on (the host CPU data it compares
  // includes CPUID leaf 0x1f, whose EDX is the current CPU's x2APIC ID):
  // unpinned, about half of the starts probed QEMU again. libvirt gives
  // each QEMU all host CPUs regardless.
  const std::string d = dir_;
  const std::string script = "set -e; mount --bind " + d + "/etc/libvirt /etc/libvirt; mount --bind " + d +
                             "/run /run; mkdir -p /run/libvirt; mount --bind " + d +
                             "/var/lib/libvirt /var/lib/libvirt; mount --bind " + d +
                             "/var/log/libvirt /var/log/libvirt; mount --bind " + d +
                             "/var/cache/libvirt /var/cache/libvirt; exec taskset -c " +
                             std::to_string(first_allowed_cpu()) + " /usr/sbin/libvirtd";
  reaper_ = new Reaper({"ip", "netns", "exec", ns_name_, "sh", "-c", script}, dir_ + "/libvirtd.out");
}

void LibvirtEnv::write_config() {
  const std::string etc = dir_ + "/etc/libvirt";
  // Written from scratch (the host's configuration is not read): QEMU as
  // root without the DAC driver touching files' owners, no virtlogd, no
  // security driver, no cgroups, no per-domain mount namespace.
  write_text(etc + "/qemu.conf",
             "user = \"root\"\n"
             "group = \"root\"\n"
             "dynamic_ownership = 0\n"
             "remember_owner = 0\n"
             "stdio_handler = \"file\"\n"
             "security_driver = \"none\"\n"
             "cgroup_controllers = [ ]\n"
             "namespaces = [ ]\n");
  write_text(etc + "/libvirtd.conf",
             "auth_unix_rw = \"none\"\n"
             "auth_unix_ro = \"none\"\n"
             "log_outputs = \"3:file:/var/log/libvirt/libvirtd.log\"\n");
}

LibvirtEnv::~LibvirtEnv() {
  destroy_all();
  stop();
  // QEMUs left without libvirtd (the test stopped it, or it died): killed
  // here, and the macvtaps libvirt made for them deleted, as libvirt would.
  bool leftovers = false;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(pid_dir(), ec))
    if (e.path().extension() == ".pid" && qemu_pid(e.path().stem().string()) > 0) leftovers = true;
  if (reaper_) reaper_->kill_all();
  if (leftovers) delete_leftover_macvtaps();
  delete reaper_;
  reaper_ = nullptr;
  if (!::testing::Test::HasFailure() || getenv("RELINK_KEEP_LOGS") == nullptr) fs::remove_all(dir_, ec);
}

void LibvirtEnv::destroy_all() {
  if (!running()) return;
  for (const auto& d : domains()) virsh("destroy " + shell_quote(d));
}

void LibvirtEnv::delete_leftover_macvtaps() {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(pid_dir(), ec)) {
    if (e.path().extension() != ".xml") continue;
    const std::string x = read_file(e.path().string());
    for (size_t at = x.find("<interface type='direct'"); at != std::string::npos;
         at = x.find("<interface type='direct'", at + 1)) {
      const size_t end = x.find("</interface>", at);
      const size_t t = x.find("<target dev='", at);
      if (t == std::string::npos || t > end) continue;
      const size_t b = t + 13, q = x.find('\'', b);
      const std::string dev = x.substr(b, q - b);
      sh("ip -n " + ns_name_ + " link del " + shell_quote(dev));
    }
  }
}

void LibvirtEnv::start() {
  if (running()) return;
  if (!reaper_ || reaper_->pid() <= 0) FAIL() << "no reaper process for libvirtd";
  // Seed the private cache from the shared one, and remember what was seeded
  // (libvirt replaces a file it re-probes: new inode and mtime).
  const std::string caps = dir_ + "/var/cache/libvirt/qemu/capabilities";
  const std::string shared = cache_dir() + "/qemu/capabilities";
  std::error_code ec;
  seeded_.clear();
  for (const auto& e : fs::directory_iterator(shared, ec)) {
    if (e.path().extension() != ".xml") continue;
    const std::string mine = caps + "/" + e.path().filename().string();
    struct stat st {};
    if (fs::copy_file(e.path(), mine, fs::copy_options::overwrite_existing, ec) && stat(mine.c_str(), &st) == 0)
      seeded_[mine] = file_id(st);
  }
  fs::remove(dir_ + "/run/libvirt/libvirt-sock", ec);

  const auto t0 = std::chrono::steady_clock::now();
  pid_ = reaper_->spawn();
  if (pid_ <= 0) FAIL() << "could not start libvirtd";
  const std::string sock = dir_ + "/run/libvirt/libvirt-sock";
  bool died = false;
  const bool ready = wait_until(
      [&] {
        if (!alive(pid_)) {
          died = true;
          return true;
        }
        return fs::exists(sock) && virsh("version").status == 0;
      },
      60s, 20ms);
  last_start_s_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!ready || died) {
    kill(pid_, SIGKILL);
    wait_until([&] { return !alive(pid_); }, 5s, 5ms);
    pid_ = -1;
    FAIL() << "libvirtd " << (died ? "exited" : "did not answer within 60 s") << " in " << ns_name_ << "\n" << log();
  }
  refresh_cache();
}

// Copies back what libvirt (re)wrote into the private cache, each file
// atomically (concurrent test processes may read the shared cache).
void LibvirtEnv::refresh_cache() {
  const std::string caps = dir_ + "/var/cache/libvirt/qemu/capabilities";
  const std::string shared = cache_dir() + "/qemu/capabilities";
  std::error_code ec;
  fs::create_directories(shared, ec);
  bool rewritten = false;
  for (const auto& e : fs::directory_iterator(caps, ec)) {
    if (e.path().extension() != ".xml") continue;
    const std::string mine = e.path().string();
    struct stat st {};
    if (stat(mine.c_str(), &st) != 0) continue;
    auto seeded = seeded_.find(mine);
    if (seeded != seeded_.end() && seeded->second == file_id(st)) continue;
    rewritten = true;
    const std::string name = e.path().filename().string();
    const std::string tmp = shared + "/." + name + ".tmp-" + random_suffix();
    write_text(tmp, read_file(mine));
    fs::rename(tmp, shared + "/" + name, ec);
    if (ec) fs::remove(tmp, ec);
  }
  last_start_cached_ = !seeded_.empty() && !rewritten;
}

void LibvirtEnv::stop() {
  if (pid_ <= 0) return;
  if (alive(pid_)) {
    kill(pid_, SIGTERM);
    if (!wait_until([&] { return !alive(pid_); }, 10s, 5ms)) {
      ADD_FAILURE() << "libvirtd did not exit within 10 s of SIGTERM; killing it\n" << log();
      kill(pid_, SIGKILL);
      wait_until([&] { return !alive(pid_); }, 5s, 5ms);
    }
  }
  pid_ = -1;
}

void LibvirtEnv::restart() {
  stop();
  start();
}

bool LibvirtEnv::running() const { return alive(pid_); }

std::string LibvirtEnv::uri() const { return "qemu:///system?socket=" + dir_ + "/run/libvirt/libvirt-sock"; }

std::string LibvirtEnv::pid_dir() const { return dir_ + "/run/libvirt/qemu"; }

ShResult LibvirtEnv::virsh(const std::string& args) const {
  return sh("ip netns exec " + ns_name_ + " timeout -k 5 60 virsh -c " + shell_quote(uri()) + " " + args);
}

std::string LibvirtEnv::virsh_ok(const std::string& args) const {
  auto r = virsh(args);
  if (r.status != 0) ADD_FAILURE() << "virsh " << args << " failed (" << r.status << "):\n" << r.out;
  return r.out;
}

bool LibvirtEnv::create(const std::string& xml, const std::string& flags) {
  std::string name = "domain";
  const size_t a = xml.find("<name>"), b = xml.find("</name>");
  if (a != std::string::npos && b != std::string::npos && b > a) name = xml.substr(a + 6, b - a - 6);
  const std::string file = dir_ + "/" + name + ".xml";
  write_text(file, xml);
  auto r = virsh("create " + shell_quote(file) + (flags.empty() ? "" : " " + flags));
  if (r.status != 0) {
    ADD_FAILURE() << "virsh create " << file << " failed:\n" << r.out << "\nQEMU log:\n" << tail(qemu_log(name), 4000);
    return false;
  }
  return true;
}

std::vector<std::string> LibvirtEnv::domains() const {
  std::vector<std::string> out;
  auto r = virsh("list --name");
  if (r.status != 0) return out;
  size_t p = 0;
  while (p < r.out.size()) {
    size_t e = r.out.find('\n', p);
    if (e == std::string::npos) e = r.out.size();
    std::string line = r.out.substr(p, e - p);
    if (!line.empty()) out.push_back(line);
    p = e + 1;
  }
  return out;
}

int LibvirtEnv::qemu_pid(const std::string& domain) const {
  const int pid = std::atoi(read_file(pid_dir() + "/" + domain + ".pid").c_str());
  return alive(pid) ? pid : 0;
}

std::string LibvirtEnv::log() const {
  return "libvirtd log (" + dir_ + "/var/log/libvirt/libvirtd.log, tail):\n" +
         tail(read_file(dir_ + "/var/log/libvirt/libvirtd.log"), 6000) + "\nlibvirtd stdout/stderr (tail):\n" +
         tail(read_file(dir_ + "/libvirtd.out"), 2000);
}

std::string LibvirtEnv::qemu_log(const std::string& domain) const {
  return read_file(dir_ + "/var/log/libvirt/qemu/" + domain + ".log");
}

std::string domain_xml(const DomainSpec& d) {
  std::string x = "<domain type='qemu'>\n  <name>" + xml_escape(d.name) +
                  "</name>\n  <memory unit='MiB'>256</memory>\n  <vcpu>1</vcpu>\n  <os>\n    <type arch='x86_64' "
                  "machine='" +
                  xml_escape(d.machine) + "'>hvm</type>\n";
  if (!d.guest_dir.empty()) {
    const std::string kernel = d.guest_dir + (fs::exists(d.guest_dir + "/vmlinux") ? "/vmlinux" : "/vmlinuz");
    x += "    <kernel>" + xml_escape(kernel) + "</kernel>\n    <initrd>" +
         xml_escape(d.guest_dir + "/initramfs.cpio.gz") + "</initrd>\n    <cmdline>" +
         xml_escape("console=ttyS0 quiet panic=-1 relink.tag=" + d.name +
                    (d.cmdline_extra.empty() ? "" : " " + d.cmdline_extra)) +
         "</cmdline>\n";
  }
  x += "  </os>\n  <features><acpi/><apic/></features>\n"
       "  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>destroy</on_reboot>\n  <on_crash>destroy</on_crash>\n"
       "  <devices>\n    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n";
  for (const auto& n : d.nics) {
    x += "    <interface type='direct'>\n";
    if (!n.mac.empty()) x += "      <mac address='" + xml_escape(n.mac) + "'/>\n";
    x += "      <source dev='" + xml_escape(n.source_dev) + "' mode='" + xml_escape(n.mode) + "'/>\n";
    x += "      <model type='" + xml_escape(n.model) + "'/>\n";
    if (n.queues > 1) x += "      <driver queues='" + std::to_string(n.queues) + "'/>\n";
    if (!n.pci_slot.empty())
      x += "      <address type='pci' domain='0x0000' bus='0x00' slot='" + xml_escape(n.pci_slot) +
           "' function='0x0'/>\n";
    x += "    </interface>\n";
  }
  for (const auto& n : d.bridge_nics) {
    const bool network = !n.network.empty();
    x += std::string("    <interface type='") + (network ? "network" : "bridge") + "'>\n";
    if (!n.mac.empty()) x += "      <mac address='" + xml_escape(n.mac) + "'/>\n";
    x += network ? "      <source network='" + xml_escape(n.network) + "'/>\n"
                 : "      <source bridge='" + xml_escape(n.bridge) + "'/>\n";
    x += "      <model type='" + xml_escape(n.model) + "'/>\n    </interface>\n";
  }
  for (const auto& n : d.passt_nics) {
    x += "    <interface type='user'>\n";
    if (!n.mac.empty()) x += "      <mac address='" + xml_escape(n.mac) + "'/>\n";
    x += "      <backend type='passt'/>\n      <model type='virtio'/>\n";
    if (n.forward_tcp > 0)
      x += "      <portForward proto='tcp'>\n        <range start='" + std::to_string(n.forward_tcp) +
           "'/>\n      </portForward>\n";
    x += "    </interface>\n";
  }
  if (!d.serial_log.empty())
    x += "    <serial type='file'>\n      <source path='" + xml_escape(d.serial_log) +
         "'/>\n      <target port='0'/>\n    </serial>\n";
  x += "    <controller type='usb' model='none'/>\n    <memballoon model='none'/>\n  </devices>\n</domain>\n";
  return x;
}

void push_ifindex(const Netns& ns, int n) {
  // Each pushed namespace notes where its counter went as its lo's alias
  // (gone with the namespace). Pushes are serialized across processes with
  // a lock on /run/netns, and each goes 512 past every noted one.
  const std::string kNote = "relink-ifindex-end=";
  int lock = open("/run/netns", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (lock >= 0) flock(lock, LOCK_EX);
  int target = 2 * n;
  const std::string notes =
      sh("for n in $(ip netns list | cut -d' ' -f1); do ip -n \"$n\" -o link show lo; done 2>/dev/null").out;
  for (size_t at = notes.find(kNote); at != std::string::npos; at = notes.find(kNote, at + 1))
    target = std::max(target, std::atoi(notes.c_str() + at + kNote.size()) + 512);
  // Past every /dev/tapN there is now, too.
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/dev", ec)) {
    const std::string f = e.path().filename().string();
    if (f.size() > 3 && f.compare(0, 3, "tap") == 0 && f.find_first_not_of("0123456789", 3) == std::string::npos)
      target = std::max(target, std::atoi(f.c_str() + 3) + 64);
  }

  const std::string group = "4094";
  int made = 0;
  auto batch = [&](int count) {
    std::string cmds;
    for (int i = made; i < made + count; ++i)
      cmds += "link add rlx" + std::to_string(i) + " group " + group + " type veth peer name rly" + std::to_string(i) +
              " group " + group + "\n";
    made += count;
    const std::string file = "/tmp/relink-ifindex-" + random_suffix() + ".batch";
    write_text(file, cmds);
    auto r = sh("ip -n " + ns.name() + " -batch " + file);
    fs::remove(file, ec);
    if (r.status != 0) ADD_FAILURE() << "ip -batch in " << ns.name() << ": " << tail(r.out, 2000);
    return ns.ifindex("rly" + std::to_string(made - 1));
  };
  int last = batch(std::max(n, 1));
  if (last > 0 && last < target) last = batch((target - last) / 2 + 1);
  sh("ip -n " + ns.name() + " link del group " + group + "; ip -n " + ns.name() + " link set lo alias " + kNote +
     std::to_string(last));
  if (lock >= 0) close(lock);
}

}  // namespace relink::test
