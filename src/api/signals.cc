#include "hangar/api/signals.h"

#include <atomic>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include "hangar/base/log.h"

namespace hangar::api {

namespace asio = boost::asio;

struct SignalWaiter::Impl {
  asio::io_context ioc{1};
  asio::signal_set set{ioc};
  std::atomic<bool> cancelled{false};
};

SignalWaiter::SignalWaiter(std::initializer_list<int> signals) : impl_(std::make_unique<Impl>()) {
  for (int s : signals) {
    boost::system::error_code ec;
    impl_->set.add(s, ec);
    if (ec) log::Error("cannot catch signal", {{"signal", s}, {"error", ec.message()}});
  }
}

SignalWaiter::~SignalWaiter() {
  boost::system::error_code ignored;
  impl_->set.clear(ignored);
}

int SignalWaiter::Wait(std::chrono::milliseconds timeout) {
  if (impl_->cancelled.load()) return 0;
  int caught = 0;
  bool done = false;
  asio::steady_timer timer(impl_->ioc);
  impl_->set.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (!ec) caught = sig;
    done = true;
    timer.cancel();
  });
  if (timeout.count() > 0) {
    timer.expires_after(timeout);
    timer.async_wait([&](const boost::system::error_code& ec) {
      if (!ec && !done) impl_->set.cancel();
    });
  }
  impl_->ioc.restart();
  impl_->ioc.run();
  return caught;
}

void SignalWaiter::Cancel() {
  impl_->cancelled.store(true);
  asio::post(impl_->ioc, [impl = impl_.get()] { impl->set.cancel(); });
}

}  // namespace hangar::api
