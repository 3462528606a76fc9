#include "hangar/node/supervisor.h"

#include <fmt/format.h>

#include "hangar/base/log.h"

namespace hangar::node {

struct Supervisor::Entry {
  std::mutex op_mu;  // serializes operations on this sandbox
  std::string id;
  std::string template_name;
  Resources resources;
  std::map<std::string, std::string> labels;
  SandboxPtr sandbox;  // null while being created
  std::optional<Clock::MonoTime> deadline;
  std::optional<Clock::WallTime> wall_deadline;
  bool gone = false;  // destroyed; lookups treat it as absent
};

Supervisor::Supervisor(SupervisorOptions options)
    : o_(std::move(options)), clock_(o_.clock ? o_.clock : &SystemClock::Instance()) {}

Result<std::unique_ptr<Supervisor>> Supervisor::Start(SupervisorOptions options) {
  if (options.drivers.empty()) return Status::InvalidArgument("supervisor: no drivers");
  std::unique_ptr<Supervisor> s(new Supervisor(std::move(options)));
  for (auto& [name, driver] : s->o_.drivers) {
    if (driver->Available().ok()) {
      HANGAR_ASSIGN_OR_RETURN(auto recovered, driver->Recover());
      for (auto& sb : recovered.second) {
        auto e = std::make_shared<Entry>();
        e->id = sb->Info().id;
        e->sandbox = std::move(sb);
        s->sandboxes_[e->id] = e;
      }
    }
  }
  if (s->o_.tick_interval.count() > 0) {
    s->ticker_ = std::thread([raw = s.get()] {
      std::unique_lock lock(raw->mu_);
      while (!raw->stop_) {
        raw->cv_.wait_for(lock, raw->o_.tick_interval);
        if (raw->stop_) break;
        lock.unlock();
        raw->Tick();
        lock.lock();
      }
    });
  }
  return s;
}

Supervisor::~Supervisor() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (ticker_.joinable()) ticker_.join();
}

std::shared_ptr<Supervisor::Entry> Supervisor::Find(const std::string& id) const {
  std::lock_guard lock(mu_);
  auto it = sandboxes_.find(id);
  if (it == sandboxes_.end() || it->second->gone) return nullptr;
  return it->second;
}

SupervisedInfo Supervisor::Describe(const Entry& e) const {
  SupervisedInfo out;
  if (e.sandbox) {
    out.sandbox = e.sandbox->Info();
  } else {
    out.sandbox.id = e.id;
    out.sandbox.state = SandboxState::kCreating;
  }
  out.template_name = e.template_name;
  out.resources = e.resources;
  out.labels = e.labels;
  out.deadline = e.wall_deadline;
  return out;
}

Result<SupervisedInfo> Supervisor::Create(const std::string& driver_name, const SandboxSpec& spec) {
  auto d = o_.drivers.find(driver_name);
  if (d == o_.drivers.end()) {
    return Status::InvalidArgument(fmt::format("no driver '{}' on this node", driver_name));
  }
  HANGAR_TRY(d->second->Available().With(fmt::format("driver {}", driver_name)));
  auto e = std::make_shared<Entry>();
  e->id = spec.id;
  e->template_name = spec.template_name;
  e->resources = spec.resources;
  e->labels = spec.labels;
  std::unique_lock op(e->op_mu);
  {
    std::lock_guard lock(mu_);
    if (sandboxes_.count(spec.id)) {
      return Status::AlreadyExists(fmt::format("sandbox {} exists", spec.id));
    }
    if (sandboxes_.size() >= o_.max_sandboxes) {
      return Status::ResourceExhausted(fmt::format("node is full: {} sandboxes", o_.max_sandboxes));
    }
    sandboxes_[spec.id] = e;  // reserves the id while the driver works
  }
  auto sb = d->second->Create(spec);
  if (!sb.ok()) {
    std::lock_guard lock(mu_);
    sandboxes_.erase(spec.id);
    return sb.status();
  }
  e->sandbox = std::move(*sb);
  if (spec.timeout.count() > 0) {
    e->deadline = clock_->Now() + spec.timeout;
    e->wall_deadline = clock_->WallNow() + spec.timeout;
  }
  log::Info("sandbox created",
            {{"id", spec.id}, {"driver", driver_name}, {"template", spec.template_name}});
  return Describe(*e);
}

Result<SupervisedInfo> Supervisor::Get(const std::string& id) const {
  auto e = Find(id);
  if (!e) return Status::NotFound(fmt::format("sandbox {} not found", id));
  std::lock_guard op(e->op_mu);
  if (e->gone) return Status::NotFound(fmt::format("sandbox {} not found", id));
  return Describe(*e);
}

std::vector<SupervisedInfo> Supervisor::List() const {
  std::vector<std::shared_ptr<Entry>> entries;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, e] : sandboxes_) {
      if (!e->gone) entries.push_back(e);
    }
  }
  std::vector<SupervisedInfo> out;
  for (const auto& e : entries) {
    std::unique_lock op(e->op_mu, std::try_to_lock);
    // A sandbox mid-operation is described from what is known without waiting for it.
    out.push_back(Describe(*e));
  }
  return out;
}

#define HANGAR_WITH_SANDBOX(id, e)                                          \
  auto e = Find(id);                                                        \
  if (!e) return Status::NotFound(fmt::format("sandbox {} not found", id)); \
  std::lock_guard op_lock_(e->op_mu);                                       \
  if (e->gone || !e->sandbox) {                                             \
    return Status::NotFound(fmt::format("sandbox {} not found", id));       \
  }

Result<Usage> Supervisor::GetUsage(const std::string& id) {
  HANGAR_WITH_SANDBOX(id, e);
  return e->sandbox->GetUsage();
}

Result<EnvdEndpoint> Supervisor::Envd(const std::string& id) const {
  HANGAR_WITH_SANDBOX(id, e);
  SandboxInfo info = e->sandbox->Info();
  if (info.state != SandboxState::kRunning) {
    return Status::FailedPrecondition(fmt::format("sandbox {} is {}", id, StateName(info.state)));
  }
  return e->sandbox->Envd();
}

Status Supervisor::Pause(const std::string& id) {
  HANGAR_WITH_SANDBOX(id, e);
  return e->sandbox->Pause();
}

Status Supervisor::Resume(const std::string& id) {
  HANGAR_WITH_SANDBOX(id, e);
  return e->sandbox->Resume();
}

Status Supervisor::Stop(const std::string& id, std::chrono::milliseconds grace) {
  HANGAR_WITH_SANDBOX(id, e);
  return e->sandbox->Stop(grace);
}

Status Supervisor::Destroy(const std::string& id) {
  HANGAR_WITH_SANDBOX(id, e);
  Status st = e->sandbox->Destroy();
  e->gone = true;
  {
    std::lock_guard lock(mu_);
    sandboxes_.erase(id);
  }
  log::Info("sandbox destroyed", {{"id", id}, {"result", st.ToString()}});
  return st;
}

Status Supervisor::SetTimeout(const std::string& id, std::chrono::seconds timeout) {
  HANGAR_WITH_SANDBOX(id, e);
  if (timeout.count() < 0) return Status::InvalidArgument("timeout must be >= 0");
  if (timeout.count() == 0) {
    e->deadline.reset();
    e->wall_deadline.reset();
  } else {
    e->deadline = clock_->Now() + timeout;
    e->wall_deadline = clock_->WallNow() + timeout;
  }
  return Status::Ok();
}

#undef HANGAR_WITH_SANDBOX

std::vector<std::string> Supervisor::Tick() {
  auto now = clock_->Now();
  std::vector<std::string> expired;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, e] : sandboxes_) {
      if (!e->gone && e->deadline && *e->deadline <= now) expired.push_back(id);
    }
  }
  std::vector<std::string> destroyed;
  for (const auto& id : expired) {
    auto e = Find(id);
    if (!e) continue;
    {
      std::lock_guard op(e->op_mu);
      // Re-check under the sandbox's lock: SetTimeout may have extended it meanwhile.
      if (e->gone || !e->sandbox || !e->deadline || *e->deadline > clock_->Now()) continue;
    }
    log::Info("sandbox timed out", {{"id", id}});
    if (Destroy(id).ok()) destroyed.push_back(id);
  }
  return destroyed;
}

std::map<std::string, Status> Supervisor::DriverStatus() const {
  std::map<std::string, Status> out;
  for (const auto& [name, d] : o_.drivers) out[name] = d->Available();
  return out;
}

}  // namespace hangar::node
