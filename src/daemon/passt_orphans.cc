// SPDX-License-Identifier: GPL-2.0-or-later
// passt processes no binding claims: the pidfiles under state_dir/passt
// that no binding of the running configuration names (a binding removed
// while relinkd was down, a crash between saving runtime.toml and stopping
// its passt, a crash right after the exec), proved with the record alone
// (passt::decide_orphan) and stopped, or left alone when nothing proves them.
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <vector>

#include "daemon/passt_supervisor.h"
#include "passt/listen_path.h"
#include "util/log.h"
#include "util/trusted_dir.h"
#include "util/untrusted.h"

namespace relink::daemon {
namespace {

auto logger() { return log::get("daemon"); }

// The names in the directory `dirfd` (read through a duplicate, so that
// `dirfd` keeps its offset and stays open).
std::vector<std::string> entries(int dirfd) {
  std::vector<std::string> out;
  const int fd = ::fcntl(dirfd, F_DUPFD_CLOEXEC, 3);
  if (fd < 0) return out;
  DIR* d = ::fdopendir(fd);
  if (!d) {
    ::close(fd);
    return out;
  }
  ::rewinddir(d);
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") out.push_back(name);
  }
  ::closedir(d);
  return out;
}

std::string command_line(const std::vector<std::string>& argv) {
  std::string line;
  for (const auto& a : argv) line += (line.empty() ? "" : " ") + a;
  return untrusted::safe_text(line, 200);
}

constexpr std::string_view kSuffix = ".pid";

}  // namespace

size_t PasstSupervisor::stop_unclaimed(const std::string& state_dir, const std::set<std::string>& claimed,
                                       const std::set<std::string>& claimed_vms) {
  auto top = trusted::open_dir(state_dir, 0755);
  if (!top) return 0;
  auto passt_dir = trusted::open_subdir(top->get(), "passt", 0700, /*create=*/false, state_dir + "/passt");
  if (!passt_dir) return 0;
  size_t stopped = 0;
  for (const std::string& vm : entries(passt_dir->get())) {
    if (claimed_vms.count(vm)) continue;
    const std::string vm_shown = state_dir + "/passt/" + vm;
    auto vm_dir = trusted::open_subdir(passt_dir->get(), vm, 0700, /*create=*/false, vm_shown);
    if (!vm_dir) {
      if (vm_dir.error().code != ENOTDIR && vm_dir.error().code != ENOENT)
        logger()->warn("passt pidfiles: {}, ignoring", vm_dir.error().message);
      continue;
    }
    bool vm_claimed = false;
    for (const std::string& file : entries(vm_dir->get())) {
      if (file.size() <= kSuffix.size() || file.compare(file.size() - kSuffix.size(), kSuffix.size(), kSuffix) != 0)
        continue;  // a temporary of an interrupted write: replaced by the next one
      const std::string name = vm + "/" + file.substr(0, file.size() - kSuffix.size());
      if (claimed.count(name)) {
        vm_claimed = true;
        continue;
      }
      if (stop_orphan(vm_dir->get(), file, name, vm_shown + "/" + file)) ++stopped;
    }
    // Empty once its pidfiles are gone (ENOTEMPTY otherwise: kept).
    if (!vm_claimed) (void)::unlinkat(passt_dir->get(), vm.c_str(), AT_REMOVEDIR);
  }
  return stopped;
}

bool PasstSupervisor::stop_orphan(int vm_dir, const std::string& file, const std::string& name,
                                  const std::string& shown) {
  auto rec = passt::read_pidfile_at(vm_dir, file, shown);
  if (!rec) {
    if (rec.error().code != ENOENT) logger()->warn("{}: {}", name, rec.error().message);
    return false;
  }
  auto now = passt::read_proc(rec->pid);
  auto decision = passt::decide_orphan(*rec, now);
  std::unique_ptr<passt::Process> proc;
  auto route = std::make_shared<PasstRoute>();
  route->name = name;
  if (decision == passt::Adoption::Adopt) {
    auto adopted = passt::Process::adopt(loop_, rec->pid, name + " passt[" + std::to_string(rec->pid) + "]",
                                         [this, route](const passt::ExitStatus& st) { on_exit(route, st); });
    // The pidfd holds whatever had the pid when it was opened: look again.
    now = passt::read_proc(rec->pid);
    if (!adopted) decision = passt::Adoption::Dead;
    else if (passt::decide_orphan(*rec, now) != passt::Adoption::Adopt) decision = passt::Adoption::Reused;
    else proc = std::move(*adopted);
  }
  bool stopped = false;
  switch (decision) {
    case passt::Adoption::Adopt:
      logger()->info("{}: stopping passt pid {}: no binding claims it any more ({})", name, rec->pid,
                     command_line(rec->argv));
      proc->stop();
      route->proc = proc.get();
      retiring_.push_back(OwnedPasst{std::move(proc), route});
      if (rec->mode != passt::mode_name(passt::Mode::StreamServer))
        if (auto r = passt::remove_listen_socket(rec->socket, static_cast<uid_t>(rec->uid)); !r)
          logger()->warn("{}: {}", name, r.error().message);
      stopped = true;
      break;
    case passt::Adoption::Dead:
    case passt::Adoption::Reused:
      logger()->info("{}: passt pid {} of a binding that is gone no longer runs, removing its pidfile", name,
                     rec->pid);
      break;
    case passt::Adoption::Outdated:
    case passt::Adoption::Foreign:
      logger()->warn("{}: pid {} from a pidfile no binding claims is not provably a passt relinkd started "
                     "(uid {}, command line '{}'): leaving it running, dropping the pidfile; stop it by hand if "
                     "it is one",
                     name, rec->pid, now && now->ids_known ? std::to_string(now->uids[0]) : "unknown",
                     now ? command_line(now->cmdline) : "");
      break;
  }
  if (auto r = passt::remove_pidfile_at(vm_dir, file, shown); !r) logger()->warn("{}: {}", name, r.error().message);
  return stopped;
}

}  // namespace relink::daemon
