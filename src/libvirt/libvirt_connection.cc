// SPDX-License-Identifier: GPL-2.0-or-later
// The libvirt connection's thread, its requests and its results posted to the loop.
#include "libvirt/libvirt_connection.h"

#include <fcntl.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <mutex>

#include "libvirt/local_socket.h"
#include "util/log.h"

namespace relink::libvirt {
namespace {

auto logger() { return log::get("libvirt"); }

// libvirt's own error printing goes to stderr; relinkd reports errors itself.
void quiet_errors(void*, virErrorPtr) {}

std::string last_libvirt_error(const std::string& what) {
  const virError* e = virGetLastError();
  std::string msg = e && e->message ? e->message : "unknown libvirt error";
  return what + ": " + msg;
}

int last_libvirt_code() {
  const virError* e = virGetLastError();
  return e ? e->code : 0;
}

struct DomainDeleter {
  void operator()(virDomainPtr d) const {
    if (d) virDomainFree(d);
  }
};
using DomainPtr = std::unique_ptr<virDomain, DomainDeleter>;

// The QEMU pid from libvirt's pidfile: the directory and the file must be
// root's and not writable by others (no one else may name a process here).
int read_qemu_pid(const std::string& pid_dir, const std::string& domain) {
  if (domain.empty() || domain.find('/') != std::string::npos || domain == "." || domain == "..") return 0;
  UniqueFd dir(open(pid_dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  struct stat st {};
  if (!dir || fstat(dir.get(), &st) < 0 || st.st_uid != 0 || (st.st_mode & 022)) return 0;
  UniqueFd f(openat(dir.get(), (domain + ".pid").c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
  if (!f || fstat(f.get(), &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != 0 || (st.st_mode & 022)) return 0;
  char buf[32] = {};
  const ssize_t n = read(f.get(), buf, sizeof buf - 1);
  if (n <= 0) return 0;
  char* end = nullptr;
  const long pid = std::strtol(buf, &end, 10);
  return pid > 1 && pid < (1L << 22) ? static_cast<int>(pid) : 0;
}

}  // namespace

// State owned by the libvirt thread alone.
struct Connection::Thread {
  Connection* src = nullptr;
  virConnectPtr conn = nullptr;
  std::vector<int> event_ids;
  int wake_watch = -1;
  int reconnect_timer = -1;
  unsigned backoff_ms = 0;
  bool close_pending = false;  // the close callback fired: drop the connection
  // Set by callbacks inside libvirt's event loop, carried out after it
  // returns: a call that hangs (a libvirtd that never answers) must not
  // hold libvirt's process-wide loop, which the next connection's thread
  // needs (a reload of [libvirt] while this one is stuck).
  bool connect_due = false;
  bool jobs_due = false;
  bool no_watch = false;  // inotify failed: retry on the timer only

  void connect();
  void after_dispatch();
  void disconnect(const std::string& why);
  void schedule_reconnect();
  // Reads a domain and posts it (or its end).
  void report(virDomainPtr dom);
  Result<DomainInfo> read(virDomainPtr dom);
  void run_jobs();

  static void on_wake(int, int fd, int, void* opaque);
  static void on_reconnect(int, void* opaque);
  static void on_close(virConnectPtr, int reason, void* opaque);
  static int on_lifecycle(virConnectPtr, virDomainPtr dom, int event, int detail, void* opaque);
  static void on_device_added(virConnectPtr, virDomainPtr dom, const char* alias, void* opaque);
  static void on_device_removed(virConnectPtr, virDomainPtr dom, const char* alias, void* opaque);
  static void on_device_removal_failed(virConnectPtr, virDomainPtr dom, const char* alias, void* opaque);
};

Connection::Connection(sd_event* loop, ConnectionOptions opts, Callbacks cbs)
    : loop_(loop), opts_(std::move(opts)), cbs_(std::move(cbs)), sockets_(local_sockets(opts_.uri)) {}

Connection::~Connection() {
  if (thread_.joinable()) {
    stop_ = true;
    const char c = 'x';
    (void)!write(wake_write_.get(), &c, 1);
    thread_.join();
  }
}

bool Connection::retire(std::unique_ptr<Connection> c, std::chrono::milliseconds wait) {
  if (!c) return true;
  // Nothing of it reaches the loop any more.
  c->socket_watches_.clear();
  c->results_source_.reset();
  if (!c->thread_.joinable()) return true;
  c->stop_ = true;
  const char x = 'x';
  (void)!write(c->wake_write_.get(), &x, 1);
  std::unique_lock lk(c->mu_);
  // Requests and results not yet carried out end here, on the loop.
  c->jobs_.clear();
  c->results_.clear();
  if (!c->done_cv_.wait_for(lk, wait, [&] { return c->finished_; })) {
    // Detached before the thread can see abandoned_: it deletes the
    // connection as its very last step.
    c->thread_.detach();
    c->abandoned_ = true;
    c.release();
    return false;
  }
  lk.unlock();
  c->thread_.join();
  return true;
}

void Connection::wait_for_socket() {
  if (waiting_for_socket_ || stop_) return;
  waiting_for_socket_ = true;
  socket_watches_.clear();
  std::string names;
  for (const auto& path : sockets_) {
    auto w = std::make_unique<PathWatch>(loop_, path, [this] { socket_appeared(); });
    if (auto r = w->arm(); !r) {
      logger()->warn("cannot watch for libvirt's socket {}: {}; retrying on a timer", path, r.error().message);
      waiting_for_socket_ = false;
      socket_watches_.clear();
      post_job([](Thread& t) {
        t.no_watch = true;
        t.schedule_reconnect();
      });
      return;
    }
    socket_watches_.push_back(std::move(w));
    names += (names.empty() ? "" : " or ") + path;
  }
  logger()->info("waiting for libvirtd: connecting to {} when {} appears", opts_.uri, names);
  // It may have appeared since the thread looked.
  for (const auto& path : sockets_)
    if (struct stat st {}; ::stat(path.c_str(), &st) == 0) return socket_appeared();
}

void Connection::socket_appeared() {
  if (!waiting_for_socket_) return;
  waiting_for_socket_ = false;
  // May run from one of these watches' own callback, which allows it.
  socket_watches_.clear();
  post_job([](Thread& t) {
    t.backoff_ms = 0;
    if (!t.conn && t.reconnect_timer < 0) t.connect();
  });
}

bool Connection::follows(const std::string& domain) const {
  return opts_.domains.empty() || std::find(opts_.domains.begin(), opts_.domains.end(), domain) != opts_.domains.end();
}

Result<void> Connection::start() {
  static std::once_flag once;
  static int registered = 0;
  // libvirt's event loop is process-wide; it must exist before any connection.
  std::call_once(once, [] {
    virSetErrorFunc(nullptr, quiet_errors);
    registered = virEventRegisterDefaultImpl();
  });
  if (registered < 0) return Error{EIO, "libvirt: cannot set up its event loop"};
  results_fd_ = UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!results_fd_) return Error::last("eventfd");
  int p[2];
  if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0) return Error::last("pipe2");
  wake_read_ = UniqueFd(p[0]);
  wake_write_ = UniqueFd(p[1]);
  sd_event_source* s = nullptr;
  if (int r = sd_event_add_io(loop_, &s, results_fd_.get(), EPOLLIN, &Connection::on_results, this); r < 0)
    return Error::from_errno(-r, "sd_event_add_io");
  results_source_.reset(s);
  thread_state_ = std::make_unique<Thread>();
  thread_state_->src = this;
  thread_ = std::thread([this] {
    Thread& t = *thread_state_;
    t.wake_watch = virEventAddHandle(wake_read_.get(), VIR_EVENT_HANDLE_READABLE, &Thread::on_wake, &t, nullptr);
    t.connect();
    while (!stop_) {
      virEventRunDefaultImpl();
      t.after_dispatch();
    }
    if (t.reconnect_timer >= 0) virEventRemoveTimeout(t.reconnect_timer);
    t.disconnect("");
    if (t.wake_watch >= 0) virEventRemoveHandle(t.wake_watch);
    // Lets libvirt run what the removals left pending (their free callbacks).
    virEventAddTimeout(0, [](int timer, void*) { virEventRemoveTimeout(timer); }, nullptr, nullptr);
    virEventRunDefaultImpl();
    bool abandoned = false;
    {
      std::lock_guard lk(mu_);
      finished_ = true;
      abandoned = abandoned_;
      done_cv_.notify_all();
    }
    if (abandoned) delete this;  // retire() stopped waiting: nothing else refers to it
  });
  return ok();
}

void Connection::post_job(std::function<void(Thread&)> job) {
  {
    std::lock_guard lk(mu_);
    jobs_.push_back(std::move(job));
  }
  const char c = 'j';
  (void)!write(wake_write_.get(), &c, 1);
}

void Connection::post_result(std::function<void()> fn) {
  {
    std::lock_guard lk(mu_);
    results_.push_back(std::move(fn));
  }
  const uint64_t one = 1;
  (void)!write(results_fd_.get(), &one, sizeof one);
}

int Connection::on_results(sd_event_source*, int fd, uint32_t, void* userdata) {
  auto* self = static_cast<Connection*>(userdata);
  uint64_t n;
  (void)!read(fd, &n, sizeof n);
  std::deque<std::function<void()>> batch;
  {
    std::lock_guard lk(self->mu_);
    batch.swap(self->results_);
  }
  for (auto& fn : batch) fn();
  return 0;
}

void Connection::detach(const std::string& domain, const std::string& alias, std::function<void(DetachResult)> done) {
  post_job([domain, alias, done = std::move(done)](Thread& t) {
    DetachResult r;
    logger()->debug("{}: detach {}", domain, alias);
    DomainPtr dom(t.conn ? virDomainLookupByName(t.conn, domain.c_str()) : nullptr);
    if (!t.conn) {
      r.error = "not connected to libvirt";
    } else if (!dom) {
      r.error = last_libvirt_error("domain " + domain);
    } else if (virDomainDetachDeviceAlias(dom.get(), alias.c_str(), VIR_DOMAIN_AFFECT_LIVE) < 0) {
      const int code = last_libvirt_code();
      r.error = last_libvirt_error("detach " + alias);
      // libvirt 9 reports an alias the live XML lacks as an internal error.
      r.not_found = code == VIR_ERR_DEVICE_MISSING ||
                    (code == VIR_ERR_INTERNAL_ERROR && r.error.find("no device found with alias") != std::string::npos);
    } else {
      r.ok = true;
    }
    t.src->post_result([done, r] { done(r); });
  });
}

void Connection::attach(const std::string& domain, const std::string& xml, std::function<void(Result<DomainInfo>)> done) {
  post_job([domain, xml, done = std::move(done)](Thread& t) {
    logger()->debug("{}: attach device", domain);
    DomainPtr dom(t.conn ? virDomainLookupByName(t.conn, domain.c_str()) : nullptr);
    Result<DomainInfo> r = Error{EIO, "not connected to libvirt"};
    if (t.conn && !dom) r = Error{ENOENT, last_libvirt_error("domain " + domain)};
    else if (dom && virDomainAttachDeviceFlags(dom.get(), xml.c_str(), VIR_DOMAIN_AFFECT_LIVE) < 0)
      r = Error{EIO, last_libvirt_error("attach")};
    else if (dom)
      r = t.read(dom.get());
    t.src->post_result([done, r = std::move(r)]() mutable { done(std::move(r)); });
  });
}

void Connection::update(const std::string& domain, const std::string& xml, std::function<void(Result<void>)> done) {
  post_job([domain, xml, done = std::move(done)](Thread& t) {
    logger()->debug("{}: update device", domain);
    DomainPtr dom(t.conn ? virDomainLookupByName(t.conn, domain.c_str()) : nullptr);
    Result<void> r = Error{EIO, "not connected to libvirt"};
    if (t.conn && !dom) r = Error{ENOENT, last_libvirt_error("domain " + domain)};
    else if (dom && virDomainUpdateDeviceFlags(dom.get(), xml.c_str(), VIR_DOMAIN_AFFECT_LIVE) < 0)
      r = Error{EIO, last_libvirt_error("update")};
    else if (dom)
      r = ok();
    t.src->post_result([done, r] { done(r); });
  });
}

void Connection::refresh(const std::string& domain) {
  post_job([domain](Thread& t) {
    if (!t.conn) return;
    DomainPtr dom(virDomainLookupByName(t.conn, domain.c_str()));
    if (!dom) {
      t.src->post_result([src = t.src, domain] {
        if (src->cbs_.on_domain_gone) src->cbs_.on_domain_gone(domain);
      });
      return;
    }
    t.report(dom.get());
  });
}

// --- the libvirt thread ---

void Connection::Thread::connect() {
  reconnect_timer = -1;
  logger()->debug("connecting to {}", src->opts_.uri);
  conn = virConnectOpen(src->opts_.uri.c_str());
  if (!conn) {
    const std::string err = last_libvirt_error("cannot connect to " + src->opts_.uri);
    src->post_result([s = src, err] {
      s->connected_ = false;
      const bool changed = s->last_error_ != err;
      s->last_error_ = err;
      if (changed && s->cbs_.on_connection) s->cbs_.on_connection(false, err);
    });
    schedule_reconnect();
    return;
  }
  virConnectRegisterCloseCallback(conn, &Thread::on_close, this, nullptr);
  // Notices a libvirtd that hangs, not only one that closes the socket.
  virConnectSetKeepAlive(conn, 5, 3);
  struct {
    int id;
    virConnectDomainEventGenericCallback cb;
  } const events[] = {
      {VIR_DOMAIN_EVENT_ID_LIFECYCLE, VIR_DOMAIN_EVENT_CALLBACK(&Thread::on_lifecycle)},
      {VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, VIR_DOMAIN_EVENT_CALLBACK(&Thread::on_device_added)},
      {VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, VIR_DOMAIN_EVENT_CALLBACK(&Thread::on_device_removed)},
      {VIR_DOMAIN_EVENT_ID_DEVICE_REMOVAL_FAILED, VIR_DOMAIN_EVENT_CALLBACK(&Thread::on_device_removal_failed)},
  };
  for (const auto& e : events) {
    const int id = virConnectDomainEventRegisterAny(conn, nullptr, e.id, e.cb, this, nullptr);
    if (id < 0) {
      disconnect(last_libvirt_error("cannot subscribe to domain events"));
      schedule_reconnect();
      return;
    }
    event_ids.push_back(id);
  }
  // Subscribed first, listed second: a domain that starts in between is
  // reported twice, never missed.
  virDomainPtr* doms = nullptr;
  const int n = virConnectListAllDomains(conn, &doms, VIR_CONNECT_LIST_DOMAINS_ACTIVE);
  if (n < 0) {
    disconnect(last_libvirt_error("cannot list domains"));
    schedule_reconnect();
    return;
  }
  std::vector<std::string> running;
  for (int i = 0; i < n; ++i) {
    DomainPtr d(doms[i]);
    const char* name = virDomainGetName(d.get());
    if (!name || !src->follows(name)) continue;
    running.emplace_back(name);
    report(d.get());
  }
  free(doms);
  backoff_ms = 0;
  src->post_result([s = src, running] {
    s->connected_ = true;
    s->last_error_.clear();
    if (s->cbs_.on_listed) s->cbs_.on_listed(running);
    if (s->cbs_.on_connection) s->cbs_.on_connection(true, "");
  });
}

void Connection::Thread::disconnect(const std::string& why) {
  if (!conn) return;
  for (int id : event_ids) virConnectDomainEventDeregisterAny(conn, id);
  event_ids.clear();
  virConnectUnregisterCloseCallback(conn, &Thread::on_close);
  virConnectClose(conn);
  conn = nullptr;
  if (why.empty()) return;
  src->post_result([s = src, why] {
    s->connected_ = false;
    s->last_error_ = why;
    if (s->cbs_.on_connection) s->cbs_.on_connection(false, why);
  });
}

void Connection::Thread::schedule_reconnect() {
  if (src->stop_ || reconnect_timer >= 0) return;
  // No libvirtd (none of its sockets exists), or one that refused us until
  // the backoff reached its end (a socket a killed libvirtd left): wait for
  // a socket to be created instead of trying every few seconds forever. A
  // socket something listens on (a libvirtd that refused us for another
  // reason) is retried on the timer.
  bool exists = false;
  if (!src->sockets_.empty() && !no_watch && nobody_listens(src->sockets_, exists) &&
      (!exists || backoff_ms >= src->opts_.reconnect_max_ms)) {
    backoff_ms = 0;
    src->post_result([s = src] { s->wait_for_socket(); });
    return;
  }
  backoff_ms = backoff_ms ? std::min(backoff_ms * 2, src->opts_.reconnect_max_ms) : src->opts_.reconnect_min_ms;
  reconnect_timer = virEventAddTimeout(static_cast<int>(backoff_ms), &Thread::on_reconnect, this, nullptr);
}

void Connection::Thread::on_reconnect(int timer, void* opaque) {
  auto* t = static_cast<Thread*>(opaque);
  virEventRemoveTimeout(timer);
  t->reconnect_timer = -1;
  t->connect_due = true;
}

void Connection::Thread::after_dispatch() {
  if (src->stop_) return;
  if (connect_due) {
    connect_due = false;
    if (close_pending) {
      close_pending = false;
      disconnect("the connection to libvirtd was closed");
    }
    if (!conn) connect();
  }
  if (jobs_due) {
    jobs_due = false;
    run_jobs();
  }
}

void Connection::Thread::on_close(virConnectPtr, int reason, void* opaque) {
  auto* t = static_cast<Thread*>(opaque);
  logger()->debug("connection to libvirtd closed (reason {})", reason);
  // The connection may not be closed from inside its own callback: from a
  // timer, which then connects again.
  t->close_pending = true;
  if (t->reconnect_timer < 0) {
    t->backoff_ms = 0;
    t->reconnect_timer = virEventAddTimeout(0, &Thread::on_reconnect, t, nullptr);
  }
}

void Connection::Thread::on_wake(int, int fd, int, void* opaque) {
  auto* t = static_cast<Thread*>(opaque);
  char buf[64];
  while (::read(fd, buf, sizeof buf) > 0) {
  }
  t->jobs_due = true;
}

void Connection::Thread::run_jobs() {
  for (;;) {
    std::function<void(Thread&)> job;
    {
      std::lock_guard lk(src->mu_);
      if (src->jobs_.empty()) return;
      job = std::move(src->jobs_.front());
      src->jobs_.pop_front();
    }
    if (close_pending) {
      close_pending = false;
      disconnect("the connection to libvirtd was closed");
      schedule_reconnect();
    }
    const auto t0 = std::chrono::steady_clock::now();
    job(*this);
    logger()->debug("libvirt call took {:.1f} ms",
                    std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
}

Result<DomainInfo> Connection::Thread::read(virDomainPtr dom) {
  char* xml = virDomainGetXMLDesc(dom, 0);
  if (!xml) return Error{EIO, last_libvirt_error("cannot read the domain's XML")};
  auto parsed = parse_domain(xml);
  free(xml);
  if (!parsed) return parsed.error();
  DomainInfo info;
  info.desc = std::move(parsed.value());
  int state = 0, reason = 0;
  if (virDomainGetState(dom, &state, &reason, 0) == 0) info.paused = state != VIR_DOMAIN_RUNNING;
  info.qemu_pid = read_qemu_pid(src->opts_.pid_dir, info.desc.name);
  return info;
}

void Connection::Thread::report(virDomainPtr dom) {
  const char* cname = virDomainGetName(dom);
  const std::string name = cname ? cname : "";
  if (name.empty() || !src->follows(name)) return;
  if (virDomainIsActive(dom) != 1) {
    src->post_result([s = src, name] {
      if (s->cbs_.on_domain_gone) s->cbs_.on_domain_gone(name);
    });
    return;
  }
  auto info = read(dom);
  if (!info) {
    logger()->warn("{}: {}", name, info.error().message);
    return;
  }
  src->post_result([s = src, info = std::move(info.value())] {
    if (s->cbs_.on_domain) s->cbs_.on_domain(info);
  });
}

int Connection::Thread::on_lifecycle(virConnectPtr, virDomainPtr dom, int event, int, void* opaque) {
  auto* t = static_cast<Thread*>(opaque);
  const char* cname = virDomainGetName(dom);
  const std::string name = cname ? cname : "";
  if (name.empty() || !t->src->follows(name)) return 0;
  switch (event) {
    case VIR_DOMAIN_EVENT_STOPPED:
    case VIR_DOMAIN_EVENT_CRASHED:
    case VIR_DOMAIN_EVENT_SHUTDOWN:
    case VIR_DOMAIN_EVENT_STARTED:
    case VIR_DOMAIN_EVENT_SUSPENDED:
    case VIR_DOMAIN_EVENT_RESUMED:
      t->report(dom);  // gone, or running (paused or not)
      break;
    default:
      break;
  }
  return 0;
}

void Connection::Thread::on_device_added(virConnectPtr, virDomainPtr dom, const char*, void* opaque) {
  static_cast<Thread*>(opaque)->report(dom);
}

void Connection::Thread::on_device_removed(virConnectPtr, virDomainPtr dom, const char* alias, void* opaque) {
  auto* t = static_cast<Thread*>(opaque);
  const char* cname = virDomainGetName(dom);
  const std::string name = cname ? cname : "", a = alias ? alias : "";
  if (name.empty() || !t->src->follows(name)) return;
  t->src->post_result([s = t->src, name, a] {
    if (s->cbs_.on_device_removed) s->cbs_.on_device_removed(name, a);
  });
  t->report(dom);
}

void Connection::Thread::on_device_removal_failed(virConnectPtr, virDomainPtr dom, const char* alias, void* opaque) {
  auto* t = static_cast<Thread*>(opaque);
  const char* cname = virDomainGetName(dom);
  const std::string name = cname ? cname : "", a = alias ? alias : "";
  if (name.empty() || !t->src->follows(name)) return;
  t->src->post_result([s = t->src, name, a] {
    if (s->cbs_.on_device_removal_failed) s->cbs_.on_device_removal_failed(name, a);
  });
}

}  // namespace relink::libvirt
