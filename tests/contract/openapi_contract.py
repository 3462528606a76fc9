#!/usr/bin/python3
"""Holds hangard to docs/api/openapi.yaml: every response of every case below must have a status
the spec documents for that operation, a content type it documents, the headers it documents
(Retry-After) and a body that validates against the documented schema (NDJSON streams: every
line against the operation's `x-ndjson-event` schema). Also checks that the spec itself is
well-formed (every $ref resolves, every operation documents an error response).

  openapi_contract.py HANGARD_BIN SPEC_PATH

Starts its own hangard on 127.0.0.1 (port 0) with a temporary data directory, and stops it.
As root: the embedded role with a busybox + bash template (imported with hangar_it_template,
built next to hangard) — real sandboxes are created, exec'd into, written, read, logged and killed, and the
node API is exercised. Not root: the control role only — creates stay pending (no node), and
list/get/kill/route/history/timeout/admin/heartbeat still answer as documented.
Ends with the line 'N passed, M failed'.
"""
import glob
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import jsonschema
import yaml

# (method, path, body, expected status). Paths are concrete; they are matched to the spec's
# templates below.
CASES = [
    ("GET", "/healthz", None, 200),
    ("GET", "/v1/version", None, 200),
    ("HEAD", "/v1/version", None, 200),
    ("GET", "/v1/no-such-thing", None, 404),
    ("POST", "/v1/version", b"{}", 405),
]
# The node API (embedded role; needs root). Sent with the node token unless noted.
NODE_CASES = [
    ("GET", "/node/v1/info", None, 200),
    ("GET", "/node/v1/templates", None, 200),
    ("GET", "/node/v1/sandboxes", None, 200),
    ("GET", "/node/v1/sandboxes/nosuchbox", None, 404),
    ("DELETE", "/node/v1/sandboxes/nosuchbox", None, 404),
    ("POST", "/node/v1/sandboxes", b'{"template": "base", "colour": "red"}', 400),
    ("POST", "/node/v1/sandboxes", b'{"template": "nosuchtemplate"}', 404),
    ("POST", "/node/v1/sandboxes", b'{"template": "t", "resources": {"memory_mb": 1}}', 400),
    ("POST", "/node/v1/sandboxes", b'{"template": ', 400),
    ("POST", "/node/v1/sandboxes/nosuchbox/exec", b'{"cmd": "true"}', 404),
    ("POST", "/node/v1/sandboxes/nosuchbox/exec", b'{"args": []}', 400),
]
UNAUTHENTICATED_CASES = [("GET", "/node/v1/info", None, 401)]

SMALL = {"template": "base", "resources": {"cpu_millis": 100, "memory_mb": 64, "disk_mb": 64},
         "timeout_s": 600}


def spec_operation(spec, method, path):
    """The spec's operation for a concrete path, or None (path-template match)."""
    path = path.split("?", 1)[0]
    for template, item in spec["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path):
            m = "get" if method == "HEAD" else method.lower()
            return template, item.get(m)
    return None, None


def response_entry(spec, op, status):
    responses = op["responses"] if op else {}
    entry = responses.get(str(status)) or responses.get("default")
    if entry is None and op is None:
        # Not a documented path: the server-wide error shape applies.
        entry = spec["components"]["responses"]["Error"]
    if entry is None:
        return None, f"status {status} is not documented for this operation"
    if "$ref" in entry:
        entry = resolve(spec, entry["$ref"])
    return entry, None


def resolve(spec, ref):
    node = spec
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def validator_for(spec, schema):
    schema = nullable_to_draft7(schema)
    if "$ref" in schema and len(schema) == 1:
        schema = resolve(spec, schema["$ref"])
    root = dict(schema)
    root["components"] = spec["components"]
    return jsonschema.Draft7Validator(root)


def nullable_to_draft7(node):
    """OpenAPI 3.0's `nullable: true` is not JSON Schema: allow null explicitly."""
    if isinstance(node, dict):
        out = {k: nullable_to_draft7(v) for k, v in node.items()}
        if out.pop("nullable", False):
            t = out.get("type")
            if isinstance(t, str):
                out["type"] = [t, "null"]
            if "enum" in out and None not in out["enum"]:
                out["enum"] = out["enum"] + [None]
        return out
    if isinstance(node, list):
        return [nullable_to_draft7(v) for v in node]
    return node


def check_refs(spec):
    problems = []

    def walk(node, where):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "$ref":
                    try:
                        resolve(spec, v)
                    except (KeyError, TypeError):
                        problems.append(f"{where}: $ref {v} does not resolve")
                else:
                    walk(v, f"{where}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}/{i}")

    walk(spec, "#")
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method not in ("get", "put", "post", "delete", "patch"):
                continue
            if "default" not in op["responses"]:
                problems.append(f"{method.upper()} {path}: no default (error) response")
    return problems


class Checker:
    def __init__(self, spec, host, port):
        self.spec = spec
        self.schema_spec = nullable_to_draft7(spec)
        self.host, self.port = host, port
        self.passed, self.failed = 0, 0
        self.covered = set()

    def request(self, method, path, body=None, token=None, headers=None,
                content_type="application/json", timeout=60):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        h = dict(headers or {})
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body).encode()
        if body is not None:
            h["Content-Type"] = content_type
        if token:
            h["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        raw = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        conn.close()
        return resp.status, hdrs, raw

    def check(self, method, path, body=None, want=None, token=None, headers=None,
              content_type="application/json", name=None, timeout=60):
        """Sends, validates against the spec, records; returns (status, parsed body or raw)."""
        status, hdrs, raw = self.request(method, path, body, token, headers, content_type, timeout)
        label = name or f"{method} {path} -> {status}"
        errors = []
        wants = want if isinstance(want, (list, tuple, set)) else [want]
        if want is not None and status not in wants:
            errors.append(f"expected status {want}")
        template, op = spec_operation(self.spec, method, path)
        if op is None and template is not None and status != 405:
            errors.append("operation missing from the spec")
        if op is not None:
            self.covered.add((method if method != "HEAD" else "GET", template))
        entry, why = response_entry(self.spec, op, status)
        doc = None
        if why:
            errors.append(why)
        else:
            for hname, hdoc in (entry.get("headers") or {}).items():
                if "$ref" in hdoc:
                    hdoc = resolve(self.spec, hdoc["$ref"])
                # Documented headers are expected unless marked `required: false`.
                if hname.lower() not in hdrs and hdoc.get("required", True):
                    errors.append(f"documented header {hname} missing")
            content = entry.get("content") or {}
            ctype = hdrs.get("content-type", "").split(";")[0].strip()
            if method == "HEAD":
                if raw:
                    errors.append("HEAD response has a body")
            elif content and raw and ctype not in content:
                errors.append(f"content type {ctype!r} not documented ({sorted(content)})")
            elif ctype == "application/json" and "application/json" in content:
                schema = content["application/json"].get("schema")
                try:
                    doc = json.loads(raw)
                except json.JSONDecodeError as e:
                    errors.append(f"body is not JSON: {e}")
                if schema is not None and doc is not None:
                    for e in validator_for(self.schema_spec, schema).iter_errors(doc):
                        errors.append(f"schema: {e.message} at {list(e.absolute_path)}")
            elif ctype == "application/x-ndjson":
                ev = content[ctype].get("x-ndjson-event")
                doc = []
                for line in raw.decode(errors="replace").splitlines():
                    try:
                        item = json.loads(line)
                    except json.JSONDecodeError as e:
                        errors.append(f"NDJSON line is not JSON: {e}: {line!r}")
                        continue
                    doc.append(item)
                    if ev is not None:
                        for e in validator_for(self.schema_spec, ev).iter_errors(item):
                            errors.append(f"event schema: {e.message}: {line!r}")
            else:
                doc = raw
        if errors:
            self.failed += 1
            print(f"FAIL {label}: {'; '.join(errors)}; body={raw[:300]!r}")
        else:
            self.passed += 1
            print(f"ok   {label}")
        return status, doc

    def expect(self, cond, what):
        if cond:
            self.passed += 1
            print(f"ok   {what}")
        else:
            self.failed += 1
            print(f"FAIL {what}")


def read_token(path):
    with open(path) as f:
        return f.read().strip()


def e2b_cases(c, data_dir, embedded):
    """The E2B compatibility routes: the lifecycle API and, with a node, the traffic proxy."""
    key = read_token(os.path.join(data_dir, "api.key"))
    e2b = {"X-API-Key": key}
    c.check("GET", "/v2/sandboxes", want=401, headers={"X-API-Key": "hgk_" + "0" * 48})
    c.check("POST", "/v2/sandboxes", b'{"templateID": ', want=400, headers=e2b)
    c.check("POST", "/v2/sandboxes", {"templateID": "base", "allow_internet_access": True},
            want=400, headers=e2b)
    c.check("GET", "/v2/sandboxes?state=dead", want=400, headers=e2b)
    c.check("GET", "/sandboxes", want=200, headers=e2b)
    if not embedded:
        # No node: the sandbox cannot start, so it is killed and the create answered 503.
        c.check("POST", "/v2/sandboxes", {"templateID": "base", "timeout": 60}, want=503,
                headers=e2b)
        return
    for path in ("/sandboxes", "/v2/sandboxes"):
        _, sb = c.check("POST", path, {"templateID": "base", "timeout": 60,
                                       "metadata": {"suite": "contract"}}, want=201, headers=e2b)
        if not isinstance(sb, dict):
            return
        sid, token = sb["sandboxID"], sb["envdAccessToken"]
        c.expect(token and sb["envdVersion"], f"{path}: envdAccessToken and envdVersion")
        c.check("DELETE", f"/sandboxes/{sid}", want=204, headers=e2b)
    _, sb = c.check("POST", "/v2/sandboxes", {"templateID": "base", "timeout": 60,
                                              "metadata": {"suite": "contract"}},
                    want=201, headers=e2b)
    sid, token = sb["sandboxID"], sb["envdAccessToken"]
    c.check("GET", "/v2/sandboxes?metadata=suite%3Dcontract&state=running&limit=1", want=200,
            headers=e2b)
    c.check("GET", f"/sandboxes/{sid}", want=200, headers=e2b)
    c.check("GET", "/sandboxes/sbnosuch", want=404, headers=e2b)
    c.check("POST", f"/sandboxes/{sid}/timeout", {"timeout": 120}, want=204, headers=e2b)
    c.check("POST", f"/sandboxes/{sid}/timeout", {}, want=400, headers=e2b)
    c.check("POST", f"/sandboxes/{sid}/refreshes", {"duration": 30}, want=204, headers=e2b)
    c.check("POST", f"/sandboxes/{sid}/pause", want=204, headers=e2b)
    c.check("POST", f"/sandboxes/{sid}/pause", want=409, headers=e2b)
    c.check("POST", f"/sandboxes/{sid}/resume", {}, want=201, headers=e2b)
    c.check("POST", f"/v2/sandboxes/{sid}/connect", {"timeout": 60}, want=200, headers=e2b)
    c.check("POST", f"/sandboxes/{sid}/connect", {}, want=200, headers=e2b)
    c.check("GET", f"/sandboxes/{sid}/metrics", want=400, headers=e2b)
    c.check("GET", f"/sandboxes/{sid}/logs", want=400, headers=e2b)
    c.check("POST", f"/sandboxes/{sid}/snapshots", {}, want=400, headers=e2b)
    c.check("POST", f"/sandboxes/{sid}/fork", {}, want=400, headers=e2b)
    c.check("PUT", f"/sandboxes/{sid}/network", {}, want=400, headers=e2b)
    # Traffic, as the SDK sends it.
    to = {"E2b-Sandbox-Id": sid, "E2b-Sandbox-Port": "49983", "X-Access-Token": token}
    c.check("GET", "/health", want=204, headers={"E2b-Sandbox-Id": sid})
    c.check("GET", "/health", want=502, headers={"E2b-Sandbox-Id": "sbnosuch"})
    c.check("POST", "/process.Process/List", {}, want=200, headers=to)
    c.check("POST", "/process.Process/List", {}, want=401,
            headers=dict(to, **{"X-Access-Token": "wrong"}))
    c.check("POST", "/filesystem.Filesystem/Stat", {"path": "/tmp"}, want=200, headers=to)
    c.check("POST", "/files?path=/tmp/contract.txt", b"hello", want=200, headers=to,
            content_type="application/octet-stream")
    _, got = c.check("GET", "/files?path=/tmp/contract.txt", want=200, headers=to)
    c.expect(got == b"hello", "a file written through the e2b proxy reads back the same")
    c.check("DELETE", f"/sandboxes/{sid}", want=204, headers=e2b)
    c.check("DELETE", f"/sandboxes/{sid}", want=404, headers=e2b)
    c.check("POST", "/process.Process/List", {}, want=502, headers=to)


def fleet_cases(c, data_dir, embedded):
    """The /v1, /v1/admin and /internal/v1 routes, in a sequence that builds what it needs."""
    key = read_token(os.path.join(data_dir, "api.key"))
    admin = read_token(os.path.join(data_dir, "admin.token"))
    join = read_token(os.path.join(data_dir, "join.token"))

    c.check("GET", "/v1/sandboxes", want=401)
    c.check("GET", "/v1/sandboxes", want=401, token="hgk_" + "0" * 48)
    c.check("GET", "/v1/sandboxes", want=200, headers={"X-API-Key": key},
            name="GET /v1/sandboxes with X-API-Key -> 200")
    c.check("POST", "/v1/sandboxes", b'{"template": ', want=400, token=key)
    c.check("POST", "/v1/sandboxes", {"template": "base", "colour": "red"}, want=400, token=key)
    c.check("POST", "/v1/sandboxes", {"resources": {"memory_mb": 1}}, want=400, token=key)
    c.check("POST", "/v1/sandboxes", {"resources": {"cpu": 1, "cpu_millis": 1000}}, want=400,
            token=key)
    c.check("GET", "/v1/sandboxes?label=novalue", want=400, token=key)
    c.check("GET", "/v1/sandboxes?state=sleeping", want=400, token=key)
    c.check("GET", "/v1/sandboxes?limit=0", want=400, token=key)

    # An idle sandbox: running when there is a node (embedded), pending otherwise.
    idem = {"Idempotency-Key": "contract-1"}
    st, sb = c.check("POST", "/v1/sandboxes", dict(SMALL, labels={"suite": "contract"}),
                     want=201 if embedded else 202, token=key, headers=idem)
    sid = sb["id"] if isinstance(sb, dict) else "sbmissing"
    c.check("POST", "/v1/sandboxes", dict(SMALL, labels={"suite": "contract"}), want=200,
            token=key, headers=idem, name="POST /v1/sandboxes replay (Idempotency-Key) -> 200")
    c.check("POST", "/v1/sandboxes", dict(SMALL, paths=["services/payments/x.go"],
                                          wait_for_capacity=False),
            want=503, token=key, name="POST /v1/sandboxes isolated, no wait -> 503")
    if embedded:
        c.check("POST", "/v1/sandboxes", dict(SMALL, template="nosuch"), want=404, token=key)
    c.check("GET", "/v1/sandboxes", want=200, token=key)
    c.check("GET", "/v1/sandboxes?state=running,pending&label=suite=contract&limit=1",
            want=200, token=key)
    _, page = c.check("GET", "/v1/sandboxes?limit=1", want=200, token=key)
    c.check("GET", f"/v1/sandboxes/{sid}", want=200, token=key)
    c.check("GET", "/v1/sandboxes/sbnosuch", want=404, token=key)
    c.check("GET", f"/v1/sandboxes/{sid}/route", want=200, token=key)
    c.check("GET", f"/v1/sandboxes/{sid}/history", want=200, token=key)
    c.check("GET", f"/v1/sandboxes/{sid}/logs", want=200, token=key)
    c.check("POST", f"/v1/sandboxes/{sid}/timeout", {"timeout_s": 900}, want=200, token=key)
    c.check("POST", f"/v1/sandboxes/{sid}/timeout", {"timeout_s": 0}, want=400, token=key)
    c.check("POST", f"/v1/sandboxes/{sid}/timeout", {"seconds": 5}, want=400, token=key)
    c.check("GET", "/v1/nodes", want=200, token=key)
    c.check("GET", "/v1/pools", want=200, token=key)

    if embedded:
        c.check("POST", f"/v1/sandboxes/{sid}/exec",
                {"cmd": "sh", "args": ["-c", "echo out; echo err >&2; exit 3"]}, want=200,
                token=key)
        c.check("PUT", f"/v1/sandboxes/{sid}/files?path=/tmp/c/hello.txt", b"hello", want=201,
                token=key, content_type="application/octet-stream")
        _, got = c.check("GET", f"/v1/sandboxes/{sid}/files?path=/tmp/c/hello.txt", want=200,
                         token=key)
        c.expect(got == b"hello", "file read back through /v1 equals what was written")
        c.check("GET", f"/v1/sandboxes/{sid}/files?path=/tmp/c&list=1", want=200, token=key)
        c.check("GET", f"/v1/sandboxes/{sid}/files?path=/tmp/nosuch", want=404, token=key)
        c.check("GET", f"/v1/sandboxes/{sid}/files", want=400, token=key)
        # A command task and its followed log.
        st, cmd = c.check("POST", "/v1/sandboxes",
                          dict(SMALL, command=["sh", "-c", "echo out; echo err >&2; exit 4"]),
                          want=201, token=key)
        if isinstance(cmd, dict):
            _, events = c.check("GET", f"/v1/sandboxes/{cmd['id']}/logs?follow=1", want=200,
                                token=key, timeout=120)
            c.expect(isinstance(events, list) and events and events[-1].get("event") == "end"
                     and events[-1].get("exit_code") == 4,
                     "followed log ends with {event: end, exit_code: 4}")
    else:
        c.check("POST", f"/v1/sandboxes/{sid}/exec", {"cmd": "true"}, want=409, token=key)
        c.check("GET", f"/v1/sandboxes/{sid}/files?path=/etc/passwd", want=409, token=key)
        c.check("PUT", f"/v1/sandboxes/{sid}/files?path=/tmp/x", b"x", want=409, token=key,
                content_type="application/octet-stream")
    c.check("POST", f"/v1/sandboxes/{sid}/exec", {"cmd": "true", "colour": "red"}, want=400,
            token=key)

    # Admin: teams (a quota of 1 gives a 429), policy reload (a bad file is 400, old stays).
    c.check("POST", "/v1/admin/teams", {"name": "contract-team"}, want=401, token=key)
    c.check("POST", "/v1/admin/teams", {"name": ""}, want=400, token=admin)
    c.check("POST", "/v1/admin/teams", {"name": "x", "colour": 1}, want=400, token=admin)
    _, team = c.check("POST", "/v1/admin/teams", {"name": "contract-team", "max_concurrent": 1},
                      want=201, token=admin)
    c.check("POST", "/v1/admin/teams", {"name": "contract-team"}, want=409, token=admin)
    if isinstance(team, dict):
        tkey = team["api_key"]
        c.check("GET", f"/v1/sandboxes/{sid}", want=404, token=tkey,
                name="GET another team's sandbox -> 404")
        c.check("DELETE", f"/v1/sandboxes/{sid}", want=404, token=tkey,
                name="DELETE another team's sandbox -> 404")
        _, first = c.check("POST", "/v1/sandboxes", SMALL, want=201 if embedded else 202,
                           token=tkey)
        c.check("POST", "/v1/sandboxes", SMALL, want=429, token=tkey,
                name="POST /v1/sandboxes over quota -> 429")
        if isinstance(first, dict):
            c.check("DELETE", f"/v1/sandboxes/{first['id']}", want=200, token=tkey)
    c.check("POST", "/v1/admin/policy/reload", want=200, token=admin)
    c.check("POST", "/v1/admin/policy/reload", want=401, token=key)
    policy = os.path.join(data_dir, "policy.yaml")
    with open(policy) as f:
        good = f.read()
    with open(policy + ".new", "w") as f:
        f.write("version: 1\ndefault: shared\nrules:\n  - name: x\n    when: 'size(paths) >'\n"
                "    tier: isolated\n")
    os.replace(policy + ".new", policy)
    _, bad = c.check("POST", "/v1/admin/policy/reload", want=400, token=admin)
    c.expect(isinstance(bad, dict) and re.search(r"policy\.yaml:\d+:\d+", bad.get("message", "")),
             "a bad policy's error names file:line:column")
    with open(policy + ".new", "w") as f:
        f.write(good)
    os.replace(policy + ".new", policy)
    c.check("POST", "/v1/admin/policy/reload", want=200, token=admin)

    # Node agents. (Embedded: the real node heartbeats too; this fake one is never placed on,
    # as the report advertises no room: capacity 0.)
    report = {"id": "contract-node", "pool": "hardened", "url": "http://127.0.0.1:9",
              "token": "t" * 32, "drivers": ["gvisor"],
              "capacity": {"cpu_millis": 0, "memory_mb": 0, "disk_mb": 0, "iops": 0},
              "templates": ["base"], "sandboxes": []}
    c.check("POST", "/internal/v1/nodes/heartbeat", report, want=401, token=key)
    c.check("POST", "/internal/v1/nodes/heartbeat", dict(report, pool="nosuchpool"), want=400,
            token=join)
    c.check("POST", "/internal/v1/nodes/heartbeat", dict(report, colour="red"), want=400,
            token=join)
    c.check("POST", "/internal/v1/nodes/heartbeat", {"id": "x"}, want=400, token=join)
    c.check("POST", "/internal/v1/nodes/heartbeat", report, want=200, token=join)
    _, nodes = c.check("GET", "/v1/nodes", want=200, token=key,
                       name="GET /v1/nodes after a heartbeat -> 200")
    c.expect(isinstance(nodes, dict) and any(n["id"] == "contract-node" for n in nodes["nodes"]),
             "the heartbeating node is listed")
    c.check("GET", "/v1/pools", want=200, token=key, name="GET /v1/pools with a node -> 200")

    c.check("DELETE", f"/v1/sandboxes/{sid}", want=200, token=key)
    c.check("DELETE", f"/v1/sandboxes/{sid}", want=200, token=key,
            name="DELETE again (idempotent) -> 200")
    c.check("DELETE", "/v1/sandboxes/sbnosuch", want=404, token=key)
    c.check("POST", f"/v1/sandboxes/{sid}/timeout", {"timeout_s": 60}, want=409, token=key,
            name="POST timeout of a killed sandbox -> 409")
    # Leave nothing running.
    _, left = c.check("GET", "/v1/sandboxes?state=pending,starting,running", want=200, token=key,
                      name="GET /v1/sandboxes still active -> 200")
    for t in (left or {}).get("sandboxes", []) if isinstance(left, dict) else []:
        c.request("DELETE", f"/v1/sandboxes/{t['id']}", token=key)


def main():
    hangard, spec_path = sys.argv[1], sys.argv[2]
    with open(spec_path) as f:
        spec = yaml.safe_load(f)
    passed, failed = 0, 0

    problems = check_refs(spec)
    for p in problems:
        print(f"FAIL spec: {p}")
    if problems:
        failed += 1
    else:
        passed += 1
        print("ok   spec is well-formed")

    embedded = os.geteuid() == 0
    template_tool = os.path.join(os.path.dirname(hangard), "hangar_it_template")
    if embedded and not (os.access(template_tool, os.X_OK) and os.access("/bin/busybox", os.X_OK)):
        print(f"note: {template_tool} or /bin/busybox missing: running the control role only")
        embedded = False
    if not embedded:
        print("note: control role only (not root): creates stay pending, node API not exercised")
    cgroup_root = f"hangar-contract-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="hangar-contract-") as tmp:
        data_dir = os.path.join(tmp, "data")
        if embedded:
            # bash too: the e2b routes refuse a template without it.
            subprocess.run([template_tool, data_dir, "base", "--host-program", "/usr/bin/bash"],
                           check=True)
        proc = subprocess.Popen(
            [hangard, "--role", "embedded" if embedded else "control", "--listen", "127.0.0.1:0",
             "--data-dir", data_dir, "--http-access-log", "false", "--node-base-template", "",
             "--node-drivers", "ns", "--node-disk-pool", "64:0", "--node-cgroup-root", cgroup_root,
             "--node-uid-base", str((1 << 30) + 60 * 256 * 65536), "--node-uid-slots", "64",
             "--node-heartbeat-ms", "200", "--node-token", "contract-token"],
            stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, "hangard.log"), "w"), text=True)
        try:
            line = proc.stdout.readline()
            m = re.search(r"listening on http://([\d.]+):(\d+)", line)
            if not m:
                with open(os.path.join(tmp, "hangard.log")) as f:
                    print(f"FAIL hangard did not start: {line!r} {f.read()[-2000:]}")
                print(f"{passed} passed, {failed + 1} failed")
                return 1
            c = Checker(spec, m.group(1), int(m.group(2)))
            for method, path, body, want in CASES:
                c.check(method, path, body, want)
            if embedded:
                # The node reports its template before the first create is routed.
                deadline = time.time() + 10
                key = read_token(os.path.join(data_dir, "api.key"))
                while time.time() < deadline:
                    st, _, raw = c.request("GET", "/v1/nodes", token=key)
                    if st == 200 and json.loads(raw)["nodes"]:
                        break
                    time.sleep(0.1)
                for method, path, body, want in NODE_CASES:
                    c.check(method, path, body, want, token="contract-token")
                for method, path, body, want in UNAUTHENTICATED_CASES:
                    c.check(method, path, body, want)
            fleet_cases(c, data_dir, embedded)
            e2b_cases(c, data_dir, embedded)
            if embedded:
                deadline = time.time() + 15
                while time.time() < deadline:
                    st, _, raw = c.request("GET", "/node/v1/sandboxes", token="contract-token")
                    if st == 200 and not json.loads(raw)["sandboxes"]:
                        break
                    time.sleep(0.2)
                c.expect(st == 200 and not json.loads(raw)["sandboxes"],
                         "no sandbox left on the node")
            # Every /v1, /v1/admin and /internal/v1 operation of the spec was exercised, and with
            # a node every e2b one.
            e2b_paths = ("/sandboxes", "/v2/", "/process.", "/filesystem.", "/files", "/health")
            for template, item in spec["paths"].items():
                if not template.startswith(("/v1/", "/internal/") +
                                           (e2b_paths if embedded else ())):
                    continue
                for method in item:
                    if method in ("get", "put", "post", "delete") and \
                            (method.upper(), template) not in c.covered:
                        c.expect(False, f"{method.upper()} {template} exercised")
            passed += c.passed
            failed += c.failed
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = "killed"
            # The node role's (empty) cgroup root, in every hierarchy.
            for d in glob.glob(f"/sys/fs/cgroup/*/{cgroup_root}") + \
                    glob.glob(f"/sys/fs/cgroup/{cgroup_root}"):
                try:
                    os.rmdir(d)
                except OSError as e:
                    failed += 1
                    print(f"FAIL cgroup {d} left behind: {e}")
            if rc != 0:
                failed += 1
                print(f"FAIL hangard exit status after SIGTERM: {rc}")
            else:
                passed += 1
                print("ok   hangard exits 0 on SIGTERM")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
