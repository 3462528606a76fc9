#!/usr/bin/python3
"""Holds hangard to docs/api/openapi.yaml: every response of every case below must have a status
the spec documents for that operation and a body that validates against the documented schema.
Also checks that the spec itself is well-formed (every $ref resolves, every operation documents
an error response).

  openapi_contract.py HANGARD_BIN SPEC_PATH

Starts its own hangard on 127.0.0.1 (port 0) with a temporary data directory, and stops it.
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


def spec_operation(spec, method, path):
    """The spec's operation for a concrete path, or None (path-template match)."""
    for template, item in spec["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path):
            m = "get" if method == "HEAD" else method.lower()
            return template, item.get(m)
    return None, None


def response_schema(spec, op, status):
    responses = op["responses"] if op else {}
    entry = responses.get(str(status)) or responses.get("default")
    if entry is None and op is None:
        # Not a documented path: the server-wide error shape applies.
        entry = spec["components"]["responses"]["Error"]
    if entry is None:
        return None, f"status {status} is not documented for this operation"
    if "$ref" in entry:
        entry = resolve(spec, entry["$ref"])
    content = entry.get("content", {}).get("application/json")
    return (content or {}).get("schema"), None


def resolve(spec, ref):
    node = spec
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def validator_for(spec, schema):
    root = dict(schema)
    root["components"] = spec["components"]
    return jsonschema.Draft7Validator(root)


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
    cases = [(m, p, b, w, True) for m, p, b, w in CASES]
    if embedded:
        cases += [(m, p, b, w, True) for m, p, b, w in NODE_CASES]
        cases += [(m, p, b, w, False) for m, p, b, w in UNAUTHENTICATED_CASES]
    else:
        print("note: not root, so the node API is not exercised")
    with tempfile.TemporaryDirectory(prefix="hangar-contract-") as tmp:
        data_dir = os.path.join(tmp, "data")
        proc = subprocess.Popen(
            [hangard, "--role", "embedded" if embedded else "control", "--listen", "127.0.0.1:0",
             "--data-dir", data_dir, "--http-access-log", "false", "--node-base-template", "",
             "--node-disk-pool", "64:0", "--node-cgroup-root", f"hangar-contract-{os.getpid()}",
             "--node-token", "contract-token"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            m = re.search(r"listening on http://([\d.]+):(\d+)", line)
            if not m:
                print(f"FAIL hangard did not start: {line!r} {proc.stderr.read()}")
                print(f"{passed} passed, {failed + 1} failed")
                return 1
            host, port = m.group(1), int(m.group(2))
            for method, path, body, want, with_token in cases:
                conn = http.client.HTTPConnection(host, port, timeout=10)
                headers = {"Content-Type": "application/json"} if body else {}
                if with_token:
                    headers["Authorization"] = "Bearer contract-token"
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                conn.close()
                name = f"{method} {path} -> {resp.status}"
                errors = []
                if resp.status != want:
                    errors.append(f"expected status {want}")
                template, op = spec_operation(spec, method, path)
                if op is None and template is not None and resp.status != 405:
                    errors.append("operation missing from the spec")
                schema, why = response_schema(spec, op, resp.status)
                if why:
                    errors.append(why)
                elif method == "HEAD":
                    if raw:
                        errors.append("HEAD response has a body")
                elif schema is not None:
                    try:
                        doc = json.loads(raw)
                        for e in validator_for(spec, schema).iter_errors(doc):
                            errors.append(f"schema: {e.message} at {list(e.absolute_path)}")
                    except json.JSONDecodeError as e:
                        errors.append(f"body is not JSON: {e}")
                if errors:
                    failed += 1
                    print(f"FAIL {name}: {'; '.join(errors)}; body={raw[:200]!r}")
                else:
                    passed += 1
                    print(f"ok   {name}")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = "killed"
            # The node role's (empty) cgroup root, in every hierarchy.
            for d in glob.glob(f"/sys/fs/cgroup/*/hangar-contract-{os.getpid()}") + \
                    glob.glob(f"/sys/fs/cgroup/hangar-contract-{os.getpid()}"):
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
