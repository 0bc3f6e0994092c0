// SPDX-License-Identifier: GPL-2.0-or-later
// Finds a macvtap's character device and opens its queue fds, proving they are its own.
#include "macvtap/tap_device.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <optional>

#include "macvtap/macvtap_factory.h"
#include "util/log.h"

namespace relink::macvtap {
namespace {

// The kernel prints MAJOR(dev):MINOR(dev) of its internal 12:20 bit dev_t.
constexpr unsigned kMaxMajor = (1u << 12) - 1;
constexpr unsigned kMaxMinor = (1u << 20) - 1;

std::string dev_text(dev_t dev) {
  return std::to_string(major(dev)) + ":" + std::to_string(minor(dev));
}

std::string describe(const struct stat& st) {
  if (!S_ISCHR(st.st_mode)) return "no character device";
  return "char " + dev_text(st.st_rdev);
}

// File contents end up in error messages and logs: keep them one printable line.
std::string printable(std::string_view text) {
  std::string out;
  for (char c : text) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  return out;
}

bool parse_number(std::string_view text, unsigned max, unsigned& out) {
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, out);  // no sign, no spaces
  return !text.empty() && ec == std::errc() && ptr == end && out <= max;
}

std::optional<dev_t> parse_dev(std::string_view text) {
  if (text.empty() || text.back() != '\n') return std::nullopt;
  text.remove_suffix(1);
  const size_t colon = text.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  unsigned maj = 0, min = 0;
  if (!parse_number(text.substr(0, colon), kMaxMajor, maj) ||
      !parse_number(text.substr(colon + 1), kMaxMinor, min)) {
    return std::nullopt;
  }
  return makedev(maj, min);
}

// Makes the detached sysfs mount; returns its class/net or sets errno.
UniqueFd mount_private_sysfs() {
  UniqueFd fs(fsopen("sysfs", FSOPEN_CLOEXEC));
  if (!fs || fsconfig(fs.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0) return {};
  UniqueFd mnt(
      fsmount(fs.get(), FSMOUNT_CLOEXEC,
              MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC));
  if (!mnt) return {};
  // The directory fd keeps the detached mount alive; it goes away with the fd.
  return UniqueFd(openat(mnt.get(), "class/net", O_PATH | O_DIRECTORY | O_CLOEXEC));
}

Result<UniqueFd> open_queue(int dir, const std::string& name, const std::string& shown, dev_t dev,
                            bool multi_queue) {
  UniqueFd fd(openat(dir, name.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd) return Error::last("open " + shown);
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return Error::last("fstat " + shown);
  if (!S_ISCHR(st.st_mode) || st.st_rdev != dev) {
    return Error{ENXIO, shown + " opened " + describe(st) + " instead of char " + dev_text(dev)};
  }
  // macvtap accepts exactly IFF_TAP | IFF_NO_PI plus IFF_VNET_HDR and
  // IFF_MULTI_QUEUE; it ignores the name.
  struct ifreq ifr {};
  ifr.ifr_flags =
      static_cast<short>(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (multi_queue ? IFF_MULTI_QUEUE : 0));
  if (ioctl(fd.get(), TUNSETIFF, &ifr) != 0) return Error::last("TUNSETIFF on " + shown);
  return fd;
}

Result<std::vector<UniqueFd>> open_queues(int dir, const std::string& name,
                                          const std::string& shown, dev_t dev, unsigned queues) {
  std::vector<UniqueFd> fds;
  fds.reserve(queues);
  for (unsigned i = 0; i < queues; ++i) {
    auto fd = open_queue(dir, name, shown, dev, queues > 1);
    if (!fd) return fd.error();
    fds.push_back(std::move(fd).value());
  }
  return fds;
}

Result<std::vector<UniqueFd>> open_dev_node(const std::string& dev_dir, int ifindex, dev_t dev,
                                            unsigned queues) {
  const std::string name = "tap" + std::to_string(ifindex);
  const std::string shown = dev_dir + "/" + name;
  UniqueFd dir(open(dev_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return Error::last("open " + dev_dir);
  // Check before opening: opening another macvtap's node attaches a queue to
  // that device, which would take some of its traffic until we close it.
  struct stat st {};
  if (fstatat(dir.get(), name.c_str(), &st, 0) != 0) return Error::last("stat " + shown);
  if (!S_ISCHR(st.st_mode) || st.st_rdev != dev) {
    return Error{ENXIO, shown + " is " + describe(st) + " instead of char " + dev_text(dev) +
                            " (stale, or another namespace's macvtap)"};
  }
  return open_queues(dir.get(), name, shown, dev, queues);
}

// Device nodes made here are opened as root: nobody else may be able to
// replace them, and the filesystem must allow device nodes at all.
Result<UniqueFd> open_node_dir(const std::string& node_dir) {
  if (mkdir(node_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return Error::last("create node dir " + node_dir);
  }
  UniqueFd dir(open(node_dir.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir) return Error::last("open node dir " + node_dir);
  struct stat st {};
  if (fstat(dir.get(), &st) != 0) return Error::last("stat node dir " + node_dir);
  if (st.st_uid != geteuid() || (st.st_mode & 077) != 0) {
    return Error{EPERM, "node dir " + node_dir + " must be owned by uid " +
                            std::to_string(geteuid()) +
                            " and not accessible to others (mode 0700)"};
  }
  struct statvfs vfs {};
  if (fstatvfs(dir.get(), &vfs) != 0) return Error::last("statvfs node dir " + node_dir);
  if (vfs.f_flag & ST_NODEV) {
    return Error{EACCES, "node dir " + node_dir +
                             " is on a nodev mount: device nodes cannot be opened there"};
  }
  return dir;
}

Result<std::vector<UniqueFd>> open_private_node(const std::string& node_dir, int ifindex, dev_t dev,
                                                unsigned queues) {
  auto dir = open_node_dir(node_dir);
  if (!dir) return dir.error();
  static std::atomic<unsigned> serial{0};
  const std::string name = "tap" + std::to_string(ifindex) + "." + std::to_string(getpid()) + "." +
                           std::to_string(serial++);
  const std::string shown = node_dir + "/" + name;
  if (mknodat(dir->get(), name.c_str(), S_IFCHR | 0600, dev) != 0) {
    // The directory is ours alone: an existing name was left by an earlier
    // process with our pid that died between mknod and unlink.
    if (errno != EEXIST || unlinkat(dir->get(), name.c_str(), 0) != 0 ||
        mknodat(dir->get(), name.c_str(), S_IFCHR | 0600, dev) != 0) {
      return Error::last("mknod " + shown);
    }
  }
  auto fds = open_queues(dir->get(), name, shown, dev, queues);
  // The open fds keep the device; the name is no use to anyone after this.
  unlinkat(dir->get(), name.c_str(), 0);
  return fds;
}

}  // namespace

bool valid_ifname(std::string_view name) {
  if (name.empty() || name.size() >= IFNAMSIZ || name == "." || name == "..") return false;
  for (char c : name) {
    if (c == '/' || c == ':' || c == '\0' || c == ' ' || (c >= '\t' && c <= '\r')) return false;
  }
  return true;
}

Result<UniqueFd> open_sysfs_class_net() {
  UniqueFd dir = mount_private_sysfs();
  if (dir) return dir;
  const int err = errno;
  log::get("macvtap")->debug(
      "cannot mount a private sysfs ({}), using /sys/class/net: right only in the network "
      "namespace that mounted /sys",
      std::strerror(err));
  dir.reset(open("/sys/class/net", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return Error::last("open /sys/class/net");
  return dir;
}

Result<dev_t> read_macvtap_dev_at(int class_net_dir, const std::string& name, int ifindex) {
  const std::string what =
      "device number of macvtap " + printable(name) + " (ifindex " + std::to_string(ifindex) + ")";
  if (!valid_ifname(name) || ifindex <= 0) return Error{EINVAL, what + ": invalid name or ifindex"};
  const std::string path = name + "/macvtap/tap" + std::to_string(ifindex) + "/dev";
  UniqueFd fd(openat(class_net_dir, path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Error::last(what);
  // sysfs hands out a whole attribute in one read; a full buffer means junk.
  char buf[32];
  const ssize_t n = read(fd.get(), buf, sizeof buf);
  if (n < 0) return Error::last(what);
  const std::string_view text(buf, static_cast<size_t>(n));
  auto dev = static_cast<size_t>(n) < sizeof buf ? parse_dev(text) : std::nullopt;
  if (!dev) return Error{EINVAL, what + ": malformed \"" + printable(text) + "\""};
  return *dev;
}

Result<dev_t> read_macvtap_dev(const std::string& sysfs_net_dir, const std::string& name,
                               int ifindex) {
  UniqueFd dir(open(sysfs_net_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return Error::last("open " + sysfs_net_dir);
  return read_macvtap_dev_at(dir.get(), name, ifindex);
}

Result<std::vector<UniqueFd>> open_tap_queues(const TapNodeDirs& dirs, int ifindex, dev_t dev,
                                              unsigned queues) {
  // No waiting for the node to appear: devtmpfs makes it inside device_add(),
  // before RTM_NEWLINK is acknowledged. If it is missing, /dev is not
  // devtmpfs, and waiting would not help.
  auto shared = open_dev_node(dirs.dev_dir, ifindex, dev, queues);
  if (shared) return shared;
  log::get("macvtap")->debug("{}, using a private node in {}", shared.error().message,
                             dirs.node_dir);
  auto own = open_private_node(dirs.node_dir, ifindex, dev, queues);
  if (own) return own;
  return Error{own.error().code, shared.error().message + "; " + own.error().message};
}

}  // namespace relink::macvtap
