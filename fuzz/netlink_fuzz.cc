// rtnetlink bytes (one recv() buffer) through the link parser, and the parsed
// messages through a LinkTable: what a netlink socket may deliver must never
// crash either, and the table must stay consistent.
#include <cstddef>
#include <cstdint>
#include <span>

#include "fuzz_check.h"
#include "netlink/link_parser.h"
#include "netlink/link_table.h"

using namespace relink::netlink;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  relink::fuzz::quiet_logs();
  return 0;
}

namespace {

void check_table(const LinkTable& table) {
  auto all = table.all();
  FUZZ_CHECK(all.size() == table.size());
  for (const auto& l : all) {
    const LinkInfo* found = table.find(l.ifindex);
    FUZZ_CHECK(found != nullptr);
    FUZZ_CHECK(*found == l);
    if (const LinkInfo* by_name = table.find_by_name(l.name)) FUZZ_CHECK(by_name->name == l.name);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto batch = parse_link_messages(std::span<const uint8_t>(data, size));
  if (!batch) return 0;

  // The messages in order, as the watcher applies them after each recv().
  LinkTable table;
  std::vector<LinkInfo> alive;
  for (const auto& msg : batch->links) {
    for (const auto& ev : table.apply(msg)) {
      if (ev.type == LinkEventType::Removed) FUZZ_CHECK(table.find(ev.link.ifindex) == nullptr);
      else FUZZ_CHECK(table.find(ev.link.ifindex) != nullptr);
    }
    check_table(table);
    if (!msg.deleted) alive.push_back(msg.link);
  }

  // The same links as a fresh dump after ENOBUFS: a table replaced with its
  // own contents changes nothing, and any replacement leaves exactly the dump.
  auto same = table.replace_all(table.all());
  FUZZ_CHECK(same.empty());
  table.replace_all(alive);
  check_table(table);
  return 0;
}
