// Creates macvtap devices (libnl-route-3) and opens their queue fds.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "util/mac.h"
#include "util/result.h"
#include "util/unique_fd.h"

struct nl_sock;

namespace relink::macvtap {

enum class Mode { Vepa, Bridge, Private, Passthru };
const char* mode_name(Mode m);
std::optional<Mode> parse_mode(const std::string& s);

struct MacvtapSpec {
  std::string name;       // interface name to create (<= 15 chars)
  int parent_ifindex = 0;
  Mode mode = Mode::Bridge;
  MacAddress mac{};
  unsigned queues = 1;    // > 1: IFF_MULTI_QUEUE, one fd per queue
};

struct Macvtap {
  int ifindex = 0;
  std::string name;
  dev_t dev = 0;               // major:minor of its character device
  std::vector<UniqueFd> fds;   // one per queue, O_CLOEXEC, IFF_VNET_HDR set
};

struct ExistingMacvtap {
  int ifindex = 0;
  int parent_ifindex = 0;
  std::optional<MacAddress> mac;
  dev_t dev = 0;
};

class MacvtapFactory {
 public:
  virtual ~MacvtapFactory() = default;
  // Creates the macvtap on the parent, sets it up, opens `queues` fds that are
  // proven to be this device's (st_rdev == sysfs major:minor). On any failure
  // the new link is deleted again.
  virtual Result<Macvtap> create(const MacvtapSpec& spec) = 0;
  // Deletes a link by ifindex; a link that is already gone is success.
  virtual Result<void> remove(int ifindex) = 0;
  // Looks up an existing macvtap by name (for adoption and stale cleanup).
  virtual Result<std::optional<ExistingMacvtap>> find(const std::string& name) = 0;
};

// The real factory. node_dir is a root-only directory (0700) where private
// device nodes are made when /dev/tap<ifindex> is missing, stale or belongs to
// another network namespace's macvtap.
class RtnlMacvtapFactory final : public MacvtapFactory {
 public:
  explicit RtnlMacvtapFactory(std::string node_dir);
  ~RtnlMacvtapFactory() override;
  Result<Macvtap> create(const MacvtapSpec& spec) override;
  Result<void> remove(int ifindex) override;
  Result<std::optional<ExistingMacvtap>> find(const std::string& name) override;

 private:
  Result<void> ensure_socket();
  Result<UniqueFd> open_queue(int ifindex, dev_t dev, bool multi_queue);
  std::string node_dir_;
  nl_sock* sock_ = nullptr;
};

// Reads major:minor of macvtap `name` from /sys/class/net/NAME/macvtap/tapN/dev
// (pure helper over a sysfs root, for tests).
Result<dev_t> read_macvtap_dev(const std::string& sysfs_net_dir, const std::string& name, int ifindex);

}  // namespace relink::macvtap
