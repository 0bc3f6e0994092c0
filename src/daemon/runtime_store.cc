// SPDX-License-Identifier: GPL-2.0-or-later
// Reading and rewriting state_dir/runtime.toml, the VMs registered with relinkctl add.
#include "daemon/runtime_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stdio.h>

#include <cerrno>
#include <cstring>

#include "util/atomic_file.h"
#include "util/trusted_dir.h"
#include "util/unique_fd.h"

namespace relink::daemon {
namespace {

constexpr const char* kTempName = "runtime.toml.tmp";

Result<UniqueFd> open_state_dir(const std::string& state_dir) {
  auto dir = trusted::open_dir(state_dir, 0755);
  if (!dir) return Error{dir.error().code, "state_dir: " + dir.error().message};
  return std::move(dir.value());
}

// Reads the whole regular file `fd` of at most `max` bytes.
Result<std::string> read_all(int fd, size_t max, const std::string& shown) {
  std::string text;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::last("read " + shown);
    }
    if (n == 0) return text;
    if (text.size() + static_cast<size_t>(n) > max)
      return Error{EFBIG, shown + ": is larger than " + std::to_string(max >> 20) + " MiB"};
    text.append(buf, static_cast<size_t>(n));
  }
}

Result<void> write_all(int fd, const std::string& text, const std::string& shown) {
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::last("write " + shown);
    }
    done += static_cast<size_t>(n);
  }
  return ok();
}

}  // namespace

RuntimeStore::RuntimeStore(std::string state_dir) : state_dir_(std::move(state_dir)) {
  while (state_dir_.size() > 1 && state_dir_.back() == '/') state_dir_.pop_back();
}

std::string RuntimeStore::path() const { return state_dir_ + "/" + kFileName; }

Result<config::RuntimeFile> RuntimeStore::load(bool* stuck) {
  auto dir = open_state_dir(state_dir_);
  if (!dir) return dir.error();
  const std::string shown = path();
  UniqueFd fd(::openat(dir->get(), kFileName, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK));
  if (!fd && errno == ENOENT) return config::RuntimeFile{};

  // Why the file cannot be used: it is put aside under a name no earlier
  // one has, and the error returned.
  auto put_aside = [&](Error why) -> Error {
    auto aside = atomic_file::set_aside_at(dir->get(), kFileName, kInvalidName);
    if (!aside) {
      if (stuck) *stuck = true;
      return Error{why.code, why.message + "; it could not be set aside (" + aside.error().message +
                                 "): relinkctl add and remove are refused until it is moved away"};
    }
    return Error{why.code, why.message + "; the file is kept as " + state_dir_ + "/" + *aside +
                               " and no runtime VMs were read from it"};
  };

  if (!fd) {
    const int err = errno;
    // O_NOFOLLOW on a symlink: ELOOP.
    if (err == ELOOP) return put_aside(Error{EPERM, shown + ": is a symlink, not a file relinkd wrote"});
    return Error::from_errno(err, "open " + shown);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Error::last("stat " + shown);
  if (std::string why = trusted::why_untrusted_file(st, geteuid()); !why.empty())
    return put_aside(Error{EPERM, shown + ": " + why + ", not a file relinkd wrote"});
  if (static_cast<uint64_t>(st.st_size) > kMaxSize)
    return put_aside(Error{EFBIG, shown + ": is larger than " + std::to_string(kMaxSize >> 20) + " MiB"});
  auto text = read_all(fd.get(), kMaxSize, shown);
  if (!text) {
    if (text.error().code == EFBIG) return put_aside(text.error());
    return text.error();
  }
  try {
    return config::parse_runtime_file(*text, shown);
  } catch (const config::ConfigError& e) {
    return put_aside(Error{EINVAL, e.what()});
  }
}

Result<void> RuntimeStore::save(const std::vector<config::RuntimeVm>& vms, const std::vector<config::HeldVm>& held) {
  auto dir = open_state_dir(state_dir_);
  if (!dir) return dir.error();
  const int dfd = dir->get();
  const std::string shown = path();
  if (vms.empty() && held.empty()) {
    if (::unlinkat(dfd, kFileName, 0) != 0) {
      if (errno == ENOENT) return ok();
      return Error::last("remove " + shown);
    }
    if (::fsync(dfd) != 0) return Error::last("fsync " + state_dir_);
    return ok();
  }

  const std::string text = config::format_runtime_file(vms, held);
  if (text.size() > kMaxSize)
    return Error{EFBIG, shown + ": " + std::to_string(vms.size()) + " runtime VMs take more than " +
                            std::to_string(kMaxSize >> 20) + " MiB, more than relinkd reads back"};
  const std::string temp_shown = state_dir_ + "/" + kTempName;
  // A leftover of an interrupted save is relinkd's own: only root writes here.
  if (::unlinkat(dfd, kTempName, 0) != 0 && errno != ENOENT) return Error::last("remove " + temp_shown);
  UniqueFd fd(::openat(dfd, kTempName, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600));
  if (!fd) return Error::last("create " + temp_shown);
  auto fail = [&](Error e) -> Result<void> {
    fd.reset();
    (void)::unlinkat(dfd, kTempName, 0);
    return e;
  };
  // The umask may have taken bits, and the directory's group none: 0600 exactly.
  if (::fchmod(fd.get(), 0600) != 0) return fail(Error::last("chmod " + temp_shown));
  if (auto r = write_all(fd.get(), text, temp_shown); !r) return fail(r.error());
  if (::fsync(fd.get()) != 0) return fail(Error::last("fsync " + temp_shown));
  if (::close(fd.release()) != 0) return fail(Error::last("close " + temp_shown));
  if (::renameat(dfd, kTempName, dfd, kFileName) != 0) return fail(Error::last("rename " + temp_shown + " to " + shown));
  if (::fsync(dfd) != 0) return Error::last("fsync " + state_dir_);
  return ok();
}

}  // namespace relink::daemon
