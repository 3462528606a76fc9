#include "hangar/base/status.h"

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace hangar {

std::string_view CodeName(Code code) {
  switch (code) {
    case Code::kOk:
      return "ok";
    case Code::kInvalidArgument:
      return "invalid_argument";
    case Code::kNotFound:
      return "not_found";
    case Code::kAlreadyExists:
      return "already_exists";
    case Code::kFailedPrecondition:
      return "failed_precondition";
    case Code::kPermissionDenied:
      return "permission_denied";
    case Code::kUnauthenticated:
      return "unauthenticated";
    case Code::kResourceExhausted:
      return "resource_exhausted";
    case Code::kUnavailable:
      return "unavailable";
    case Code::kDeadlineExceeded:
      return "deadline_exceeded";
    case Code::kAborted:
      return "aborted";
    case Code::kCancelled:
      return "cancelled";
    case Code::kUnimplemented:
      return "unimplemented";
    case Code::kInternal:
      return "internal";
  }
  return "unknown";
}

namespace {
Code CodeForErrno(int err) {
  switch (err) {
    case ENOENT:
    case ENOTDIR:
    case ESRCH:
      return Code::kNotFound;
    case EACCES:
    case EPERM:
    case EROFS:
      return Code::kPermissionDenied;
    case ENOSPC:
    case EMFILE:
    case ENFILE:
    case ENOMEM:
    case EDQUOT:
    case E2BIG:
      return Code::kResourceExhausted;
    case EEXIST:
    case EADDRINUSE:
      return Code::kAlreadyExists;
    case EINVAL:
    case ENAMETOOLONG:
    case ELOOP:
    case EXDEV:
      return Code::kInvalidArgument;
    case EAGAIN:
    case EBUSY:
    case ECONNREFUSED:
    case EHOSTUNREACH:
    case ENETUNREACH:
      return Code::kUnavailable;
    case ETIMEDOUT:
      return Code::kDeadlineExceeded;
    case ENOSYS:
    case EOPNOTSUPP:
      return Code::kUnimplemented;
    case EINTR:
    case ECANCELED:
      return Code::kCancelled;
    default:
      return Code::kInternal;
  }
}
}  // namespace

Status Status::FromErrno(int err, std::string_view call) {
  return Status(CodeForErrno(err), fmt::format("{}: {}", call, std::strerror(err)), err);
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  return fmt::format("{}: {}", CodeName(code_), message_);
}

Status Status::With(std::string_view context) const {
  if (ok()) return *this;
  return Status(code_, fmt::format("{}: {}", context, message_), errno_);
}

}  // namespace hangar
