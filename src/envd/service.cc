#include "service.h"

#include "hangar/base/log.h"

namespace hangar::envd::internal {

Service::Service(ServiceOptions options) : o_(std::move(options)) {}

Result<std::unique_ptr<Service>> Service::Create(ServiceOptions options) {
  std::unique_ptr<Service> s(new Service(std::move(options)));
  HANGAR_ASSIGN_OR_RETURN(s->root_, Root::Open(s->o_.root));
  HANGAR_TRY(s->reaper_.Start());
  s->processes_ = std::make_unique<ProcessManager>(&s->reaper_, s->o_.processes);
  return s;
}

Service::~Service() {
  std::map<std::string, std::shared_ptr<PolledWatcher>> watchers;
  {
    std::lock_guard lock(watchers_mu_);
    watchers.swap(watchers_);
  }
  for (auto& [id, pw] : watchers) {
    pw->stop = true;
    pw->watcher->Wake();
    if (pw->thread.joinable()) pw->thread.join();
  }
  processes_.reset();  // kills what still runs; needs the reaper, so before it stops
  // Stream producers (watch streams, downloads) end once the server cancelled their streams.
  for (int i = 0; i < 200 && stream_threads_.load() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  reaper_.Stop();
}

Status Service::Register(api::Router& router) {
  HANGAR_TRY(router.Get("/health", [](const api::Request&) -> Result<api::Response> {
    api::Response r = api::Response::NoContent();
    r.SetHeader("Cache-Control", "no-store");
    return r;
  }));
  api::RouteOptions blocking;
  blocking.blocking = true;
  HANGAR_TRY(router.Get(
      "/files", [this](const api::Request& req) { return GetFiles(req); }, blocking));
  api::RouteOptions upload = blocking;
  upload.max_body_bytes = o_.max_upload_bytes;
  upload.stream_body = true;  // written to disk as it arrives, never held in memory whole
  HANGAR_TRY(router.Post(
      "/files", [this](const api::Request& req) { return PostFiles(req); }, upload));
  // Every Connect procedure: /<package>.<Service>/<Method>. Handlers may touch the disk or fork,
  // so they run on the blocking pool; streams are then fed by their own threads.
  HANGAR_TRY(router.Post(
      "/{service}/{method}",
      [this](const api::Request& req) -> Result<api::Response> { return Dispatch(req); },
      blocking));
  return Status::Ok();
}

}  // namespace hangar::envd::internal
