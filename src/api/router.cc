#include "hangar/api/router.h"

#include <algorithm>
#include <utility>

namespace hangar::api {

struct Router::Node {
  std::vector<std::pair<std::string, std::unique_ptr<Node>>> literals;
  std::unique_ptr<Node> param;  // {name}
  std::string param_name;
  std::unique_ptr<Node> rest;  // {name...}; always terminal
  std::string rest_name;
  std::vector<std::unique_ptr<Route>> routes;  // terminal: one per method
};

namespace {

bool IsValidName(std::string_view name) {
  if (name.empty()) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
}

bool IsValidMethod(std::string_view method) {
  return !method.empty() &&
         std::all_of(method.begin(), method.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
}

// Splits "a/b/" into "a", "b", "" — the piece after a trailing '/' is an (empty) segment.
std::vector<std::string_view> SplitSegments(std::string_view s) {
  std::vector<std::string_view> out;
  for (;;) {
    size_t slash = s.find('/');
    out.push_back(s.substr(0, slash));
    if (slash == std::string_view::npos) return out;
    s.remove_prefix(slash + 1);
  }
}

// Decodes a path piece only when it has escapes: the common case stays allocation-free.
bool DecodeInto(std::string_view raw, std::string& out, Status& error) {
  if (raw.find('%') == std::string_view::npos) {
    out.assign(raw);
    return true;
  }
  Result<std::string> decoded = PercentDecode(raw);
  if (!decoded.ok()) {
    error = decoded.status().With("path");
    return false;
  }
  out = std::move(*decoded);
  return true;
}

struct MatchState {
  std::string_view method;
  RouteMatch* match;
  std::vector<std::string_view> allowed;
  bool failed = false;  // a decoding error: stop searching
};

}  // namespace

Router::Router() : root_(std::make_unique<Node>()) {}
Router::~Router() = default;
Router::Router(Router&&) noexcept = default;
Router& Router::operator=(Router&&) noexcept = default;

Status Router::Handle(std::string_view method, std::string_view pattern, Handler handler,
                      RouteOptions options) {
  auto fail = [&](std::string_view why) {
    return Status::InvalidArgument("route " + std::string(method) + " " + std::string(pattern) +
                                   ": " + std::string(why));
  };
  if (!IsValidMethod(method)) return fail("method must be an upper-case token");
  if (pattern.empty() || pattern[0] != '/') return fail("pattern must start with '/'");
  if (!handler) return fail("handler is empty");

  std::vector<std::string_view> segments = SplitSegments(pattern.substr(1));
  Node* node = root_.get();
  for (size_t i = 0; i < segments.size(); ++i) {
    std::string_view seg = segments[i];
    bool braced = seg.size() >= 2 && seg.front() == '{' && seg.back() == '}';
    if (!braced) {
      if (seg.find_first_of("{}") != std::string_view::npos) {
        return fail("a parameter must be a whole segment: " + std::string(seg));
      }
      auto it = std::find_if(node->literals.begin(), node->literals.end(),
                             [&](const auto& l) { return l.first == seg; });
      if (it == node->literals.end()) {
        node->literals.emplace_back(std::string(seg), std::make_unique<Node>());
        it = std::prev(node->literals.end());
      }
      node = it->second.get();
      continue;
    }
    std::string_view name = seg.substr(1, seg.size() - 2);
    bool is_rest = name.size() > 3 && name.substr(name.size() - 3) == "...";
    if (is_rest) name.remove_suffix(3);
    if (!IsValidName(name)) return fail("bad parameter name: " + std::string(seg));
    std::unique_ptr<Node>& child = is_rest ? node->rest : node->param;
    std::string& child_name = is_rest ? node->rest_name : node->param_name;
    if (is_rest && i + 1 != segments.size()) return fail("{name...} must be the last segment");
    if (child && child_name != name) {
      return fail("parameter {" + std::string(name) + "} conflicts with {" + child_name +
                  "} at the same position");
    }
    if (!child) {
      child = std::make_unique<Node>();
      child_name = std::string(name);
    }
    node = child.get();
  }
  for (const auto& r : node->routes) {
    if (r->method == method) return fail("already registered (as " + r->pattern + ")");
  }
  node->routes.push_back(std::make_unique<Route>(
      Route{std::string(method), std::string(pattern), std::move(handler), options}));
  return Status::Ok();
}

Status Router::Get(std::string_view p, Handler h, RouteOptions o) {
  return Handle("GET", p, std::move(h), o);
}
Status Router::Post(std::string_view p, Handler h, RouteOptions o) {
  return Handle("POST", p, std::move(h), o);
}
Status Router::Put(std::string_view p, Handler h, RouteOptions o) {
  return Handle("PUT", p, std::move(h), o);
}
Status Router::Patch(std::string_view p, Handler h, RouteOptions o) {
  return Handle("PATCH", p, std::move(h), o);
}
Status Router::Delete(std::string_view p, Handler h, RouteOptions o) {
  return Handle("DELETE", p, std::move(h), o);
}

namespace {

template <typename NodeT>
bool TryTerminal(const NodeT& node, MatchState& st) {
  if (node.routes.empty()) return false;
  const Route* get = nullptr;
  for (const auto& r : node.routes) {
    if (r->method == st.method) {
      st.match->route = r.get();
      return true;
    }
    if (r->method == "GET") get = r.get();
    st.allowed.push_back(r->method);
  }
  if (get != nullptr) {
    if (st.method == "HEAD") {
      st.match->route = get;
      return true;
    }
    st.allowed.push_back("HEAD");
  }
  return false;
}

template <typename NodeT>
bool Walk(const NodeT& node, std::string_view rem, bool at_end, MatchState& st) {
  Request::Params& params = st.match->params;
  if (at_end) {
    if (TryTerminal(node, st)) return true;
    if (node.rest) {
      params.emplace_back(node.rest_name, std::string());
      if (TryTerminal(*node.rest, st)) return true;
      params.pop_back();
    }
    return false;
  }
  size_t slash = rem.find('/');
  std::string_view seg = rem.substr(0, slash);
  std::string_view next =
      slash == std::string_view::npos ? std::string_view() : rem.substr(slash + 1);
  bool next_at_end = slash == std::string_view::npos;

  std::string decoded;
  if (!DecodeInto(seg, decoded, st.match->error)) {
    st.failed = true;
    return false;
  }
  for (const auto& [literal, child] : node.literals) {
    if (literal == decoded) {
      if (Walk(*child, next, next_at_end, st)) return true;
      if (st.failed) return false;
      break;
    }
  }
  if (node.param && !decoded.empty()) {
    params.emplace_back(node.param_name, decoded);
    if (Walk(*node.param, next, next_at_end, st)) return true;
    if (st.failed) return false;
    params.pop_back();
  }
  if (node.rest) {
    std::string value;
    if (!DecodeInto(rem, value, st.match->error)) {
      st.failed = true;
      return false;
    }
    params.emplace_back(node.rest_name, std::move(value));
    if (TryTerminal(*node.rest, st)) return true;
    params.pop_back();
  }
  return false;
}

}  // namespace

RouteMatch Router::Match(std::string_view method, std::string_view path) const {
  RouteMatch match;
  if (path.empty() || path[0] != '/') {
    match.kind = RouteMatch::Kind::kBadPath;
    match.error = Status::InvalidArgument("request target must be an absolute path");
    return match;
  }
  MatchState st{method, &match, {}};
  if (Walk(*root_, path.substr(1), false, st)) {
    match.kind = RouteMatch::Kind::kFound;
    return match;
  }
  match.params.clear();
  if (st.failed) {
    match.kind = RouteMatch::Kind::kBadPath;
    return match;
  }
  if (st.allowed.empty()) {
    match.kind = RouteMatch::Kind::kNotFound;
    return match;
  }
  std::sort(st.allowed.begin(), st.allowed.end());
  st.allowed.erase(std::unique(st.allowed.begin(), st.allowed.end()), st.allowed.end());
  match.kind = RouteMatch::Kind::kMethodNotAllowed;
  for (std::string_view m : st.allowed) {
    if (!match.allow.empty()) match.allow += ", ";
    match.allow += m;
  }
  return match;
}

}  // namespace hangar::api
