// Status and Result<T>: the one error convention of Hangar.
//
// Contract:
//  - Every function that crosses a module boundary and can fail returns Status or Result<T>.
//    Exceptions never cross a module boundary; code that calls a throwing library catches and
//    converts at the call site.
//  - A failed system call is reported with Status::FromErrno(errno, "call(args)"), so the
//    message names the call, its arguments and the error: "open(/x, O_RDONLY): No such file".
//  - Codes map one-to-one onto HTTP statuses at the API edge (see api/error.h).
// Thread safety: values; copy freely.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace hangar {

enum class Code {
  kOk = 0,
  kInvalidArgument,  // the caller's input is wrong; retrying the same call will not help
  kNotFound,
  kAlreadyExists,
  kFailedPrecondition,  // the system is not in a state that allows this call
  kPermissionDenied,
  kUnauthenticated,
  kResourceExhausted,  // quota, capacity or size limit
  kUnavailable,        // transient; retry later
  kDeadlineExceeded,
  kAborted,
  kCancelled,
  kUnimplemented,
  kInternal,
};

std::string_view CodeName(Code code);  // "invalid_argument", ...

class [[nodiscard]] Status {
 public:
  Status() = default;  // ok
  Status(Code code, std::string message, int err = 0)
      : code_(code), message_(std::move(message)), errno_(err) {}

  static Status Ok() { return {}; }
  static Status InvalidArgument(std::string m) { return {Code::kInvalidArgument, std::move(m)}; }
  static Status NotFound(std::string m) { return {Code::kNotFound, std::move(m)}; }
  static Status AlreadyExists(std::string m) { return {Code::kAlreadyExists, std::move(m)}; }
  static Status FailedPrecondition(std::string m) {
    return {Code::kFailedPrecondition, std::move(m)};
  }
  static Status PermissionDenied(std::string m) { return {Code::kPermissionDenied, std::move(m)}; }
  static Status Unauthenticated(std::string m) { return {Code::kUnauthenticated, std::move(m)}; }
  static Status ResourceExhausted(std::string m) {
    return {Code::kResourceExhausted, std::move(m)};
  }
  static Status Unavailable(std::string m) { return {Code::kUnavailable, std::move(m)}; }
  static Status DeadlineExceeded(std::string m) { return {Code::kDeadlineExceeded, std::move(m)}; }
  static Status Aborted(std::string m) { return {Code::kAborted, std::move(m)}; }
  static Status Cancelled(std::string m) { return {Code::kCancelled, std::move(m)}; }
  static Status Unimplemented(std::string m) { return {Code::kUnimplemented, std::move(m)}; }
  static Status Internal(std::string m) { return {Code::kInternal, std::move(m)}; }

  // A failed system call: `call` names it with its arguments, e.g. "mount(overlay, /x)".
  // The code is derived from the errno (ENOENT → not_found, EACCES/EPERM → permission_denied,
  // ENOSPC/EMFILE/ENOMEM → resource_exhausted, EEXIST → already_exists, EINVAL → invalid_argument,
  // EAGAIN/EBUSY → unavailable, anything else → internal).
  static Status FromErrno(int err, std::string_view call);

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  int sys_errno() const { return errno_; }  // 0 unless from FromErrno

  // "code: message", or "ok".
  std::string ToString() const;

  // Prefixes context to the message: Status::NotFound("x").With("loading template") →
  // "loading template: x". Keeps the code and errno.
  Status With(std::string_view context) const;

  friend bool operator==(const Status& a, const Status& b) {
    return a.code_ == b.code_ && a.message_ == b.message_;
  }

 private:
  Code code_ = Code::kOk;
  std::string message_;
  int errno_ = 0;
};

// Result<T>: a T or a non-ok Status. (std::expected is C++23; this is the C++20 stand-in.)
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    assert(!std::get<Status>(v_).ok() && "Result constructed from an ok Status");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return ok(); }

  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T value_or(T fallback) const& { return ok() ? value() : std::move(fallback); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace hangar

#define HANGAR_CONCAT_INNER_(a, b) a##b
#define HANGAR_CONCAT_(a, b) HANGAR_CONCAT_INNER_(a, b)

// HANGAR_TRY(expr): evaluates a Status expression; returns it from the caller if not ok.
// The variable is named per line so that a HANGAR_TRY inside a lambda in another HANGAR_TRY's
// expression does not shadow the outer one.
#define HANGAR_TRY(expr) HANGAR_TRY_IMPL_(HANGAR_CONCAT_(hangar_try_status_, __LINE__), expr)
#define HANGAR_TRY_IMPL_(var, expr) \
  do {                              \
    ::hangar::Status var = (expr);  \
    if (!var.ok()) return var;      \
  } while (0)

// HANGAR_ASSIGN_OR_RETURN(decl, expr): `decl = std::move(*result)` or return result's status.
#define HANGAR_ASSIGN_OR_RETURN(decl, expr) \
  HANGAR_ASSIGN_OR_RETURN_IMPL_(HANGAR_CONCAT_(hangar_result_, __LINE__), decl, expr)
#define HANGAR_ASSIGN_OR_RETURN_IMPL_(tmp, decl, expr) \
  auto tmp = (expr);                                   \
  if (!tmp.ok()) return tmp.status();                  \
  decl = std::move(tmp).value()
