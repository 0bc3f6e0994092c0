// SPDX-License-Identifier: GPL-2.0-or-later
// Shared checks for the macvtap integration tests: what the kernel says about
// a link, and what an fd really is.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "support/harness.h"

namespace relink::macvtap::mvtest {

// A link as `ip -d -j link show` reports it.
struct IpLink {
  int ifindex = 0;
  std::string parent;  // parent's name ("link")
  std::string kind;
  std::string mode;  // macvtap mode
  std::string mac;
  bool up = false;
  bool allmulti = false;
};

inline std::optional<IpLink> ip_link(const test::Netns& ns, const std::string& name) {
  auto r = ns.run("ip -d -j link show dev " + name);
  if (r.status != 0) return std::nullopt;
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  if (!j.is_array() || j.empty()) return std::nullopt;
  const auto& l = j[0];
  IpLink out;
  out.ifindex = l.value("ifindex", 0);
  out.parent = l.value("link", "");
  out.mac = l.value("address", "");
  for (const auto& f : l.value("flags", nlohmann::json::array())) {
    out.up |= f == "UP";
    out.allmulti |= f == "ALLMULTI";
  }
  if (l.contains("linkinfo")) {
    out.kind = l["linkinfo"].value("info_kind", "");
    if (l["linkinfo"].contains("info_data"))
      out.mode = l["linkinfo"]["info_data"].value("mode", "");
  }
  return out;
}

// Number of macvtap links in the namespace.
inline size_t count_macvtaps(const test::Netns& ns) {
  auto j = nlohmann::json::parse(ns.run("ip -j link show type macvtap").out, nullptr, false);
  return j.is_array() ? j.size() : 0;
}

// major:minor of a macvtap, read by a shell inside the namespace: `ip netns
// exec` remounts /sys there, so this is the namespace's own view.
inline std::string sysfs_dev_text(const test::Netns& ns, const std::string& name, int ifindex) {
  auto r = ns.run("cat /sys/class/net/" + name + "/macvtap/tap" + std::to_string(ifindex) + "/dev");
  return r.status == 0 ? r.out.substr(0, r.out.find('\n')) : "";
}

inline std::string dev_text(dev_t dev) {
  return std::to_string(major(dev)) + ":" + std::to_string(minor(dev));
}

inline std::string fd_path(int fd) {
  std::error_code ec;
  return std::filesystem::read_symlink("/proc/self/fd/" + std::to_string(fd), ec).string();
}

// Proves an fd is a queue of macvtap `name` with device `dev`, set up the way
// relinkd hands it to QEMU.
inline void expect_queue_fd(int fd, dev_t dev, const std::string& name, bool multi_queue) {
  struct stat st {};
  ASSERT_EQ(fstat(fd, &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(dev_text(st.st_rdev), dev_text(dev));
  EXPECT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC);
  EXPECT_FALSE(fcntl(fd, F_GETFL) & O_NONBLOCK) << "left to QEMU";
  struct ifreq ifr {};
  ASSERT_EQ(ioctl(fd, TUNGETIFF, &ifr), 0) << strerror(errno);
  EXPECT_EQ(std::string(ifr.ifr_name), name);
  EXPECT_TRUE(ifr.ifr_flags & IFF_TAP);
  EXPECT_TRUE(ifr.ifr_flags & IFF_NO_PI);
  EXPECT_TRUE(ifr.ifr_flags & IFF_VNET_HDR);
  EXPECT_EQ(bool(ifr.ifr_flags & IFF_MULTI_QUEUE), multi_queue);
}

// A private temporary directory, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "relink-mvt-XXXXXX").string();
    if (mkdtemp(tmpl.data())) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& leaf) const { return path_ + "/" + leaf; }

 private:
  std::string path_;
};

inline bool dir_is_empty(const std::string& dir) {
  std::error_code ec;
  return std::filesystem::is_empty(dir, ec) && !ec;
}

}  // namespace relink::macvtap::mvtest
