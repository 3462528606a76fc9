#!/usr/bin/python3
"""bench/control: what the control plane costs on top of the node.

  bench_control.py --bin BUILD/bin [--rounds 40] [--wrk-duration 10s] [--connections 64]

Starts an embedded hangard (root: it makes real sandboxes) on 127.0.0.1 with a busybox template
imported by hangar_it_template, then:

 (a) create → running, interleaved rounds of
       control: POST /v1/sandboxes (returns 201 once the sandbox runs), and
       node:    POST /node/v1/sandboxes with the node token (returns once envd answers),
     same template, same resources (0.1 core, 64 MiB, 64 MiB disk). Each sandbox is destroyed
     after it is timed (off the timed path), and each round waits for the node's disk pool to
     refill, so both paths take a pre-formatted disk. Prints median / p99 of each and the ratio
     control / node (target ≤ 1.5×).
 (b) GET /v1/sandboxes/{id} of a running sandbox with wrk -t2 -c64 (Authorization header), and
     GET /healthz on the same server as the peer (no auth, no store): req/s of each and the
     ratio (target for the former: ≥ 5,000 req/s).

Figures, not assertions: the exit status is non-zero only on errors or leftovers.
"""
import argparse
import glob
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time


def pct(values, p):
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, int(round(p / 100.0 * (len(s) - 1)))))
    return s[k]


class Client:
    def __init__(self, host, port, token):
        self.host, self.port, self.token = host, port, token
        self.conn = http.client.HTTPConnection(host, port, timeout=120)

    def call(self, method, path, body=None):
        headers = {"Authorization": f"Bearer {self.token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=data, headers=headers)
                r = self.conn.getresponse()
                raw = r.read()
                return r.status, (json.loads(raw) if raw else None)
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
                if attempt:
                    raise
        raise RuntimeError("unreachable")


def wait_pool(node, want_spares, data_dir, limit=30):
    """Until the disk pool holds `want_spares` attached disks again (loop devices in disks/)."""
    deadline = time.time() + limit
    while time.time() < deadline:
        out = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
        if sum(1 for l in out.splitlines() if f"{data_dir}/disks/" in l) >= want_spares:
            return True
        time.sleep(0.05)
    return False


def wrk(url, token, duration, connections, threads=2):
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}", "--latency"]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p50 = re.search(r"50%\s+([\d.]+\w+)", out)
    p99 = re.search(r"99%\s+([\d.]+\w+)", out)
    return rps, int(errors.group(1)) if errors else 0, p50.group(1) if p50 else "?", \
        p99.group(1) if p99 else "?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="build/<dir>/bin with hangard, envd, "
                    "hangar_it_template")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--wrk-duration", default="10s")
    ap.add_argument("--wrk-rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--spares", type=int, default=2)
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_control: needs root (the node role makes real sandboxes)", file=sys.stderr)
        return 2
    hangard = os.path.join(a.bin, "hangard")
    tool = os.path.join(a.bin, "hangar_it_template")
    for p in (hangard, tool, os.path.join(a.bin, "envd")):
        if not os.access(p, os.X_OK):
            print(f"bench_control: {p} missing; build hangard envd hangar_it_template",
                  file=sys.stderr)
            return 2
    if shutil.which("wrk") is None:
        print("bench_control: wrk is not installed", file=sys.stderr)
        return 2

    cgroup_root = f"hangar-bench-control-{os.getpid()}"
    rc = 0
    with tempfile.TemporaryDirectory(prefix="hangar-bench-control-") as tmp:
        data = os.path.join(tmp, "data")
        subprocess.run([tool, data, "base"], check=True)
        log = open(os.path.join(tmp, "hangard.log"), "w")
        proc = subprocess.Popen(
            [hangard, "--role", "embedded", "--listen", "127.0.0.1:0", "--data-dir", data,
             "--http-access-log", "false", "--log-level", "warn", "--node-base-template", "",
             "--node-drivers", "ns", "--node-disk-pool", f"64:{a.spares}", "--node-cgroup-root", cgroup_root,
             "--node-uid-base", str((1 << 30) + 61 * 256 * 65536), "--node-uid-slots", "256",
             "--node-heartbeat-ms", "500", "--control-team-max-concurrent", "1000"],
            stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            line = proc.stdout.readline()
            m = re.search(r"listening on http://([\d.]+):(\d+)", line)
            if not m:
                raise RuntimeError(f"hangard did not start: {line!r}")
            host, port = m.group(1), int(m.group(2))
            key = open(os.path.join(data, "api.key")).read().strip()
            node_token = open(os.path.join(data, "node.token")).read().strip()
            api = Client(host, port, key)
            node = Client(host, port, node_token)
            # The node registers (first heartbeat) before the control plane can place anything.
            deadline = time.time() + 15
            while time.time() < deadline and not api.call("GET", "/v1/nodes")[1]["nodes"]:
                time.sleep(0.1)
            spec = {"template": "base", "timeout_s": 600,
                    "resources": {"cpu_millis": 100, "memory_mb": 64, "disk_mb": 64}}
            node_spec = {"template": "base", "driver": "ns", "timeout_s": 660,
                         "resources": {"cpu_millis": 100, "memory_mb": 64, "disk_mb": 64}}

            # (a) create → running, interleaved.
            ctl_ms, node_ms = [], []
            for i in range(a.rounds + 2):  # the first two rounds warm up
                for which in (("control", "node") if i % 2 == 0 else ("node", "control")):
                    wait_pool(node, a.spares, data)
                    t0 = time.perf_counter()
                    if which == "control":
                        st, body = api.call("POST", "/v1/sandboxes", spec)
                        dt = (time.perf_counter() - t0) * 1000
                        if st != 201 or body["state"] != "running":
                            raise RuntimeError(f"control create: {st} {body}")
                        if i >= 2:
                            ctl_ms.append(dt)
                        api.call("DELETE", f"/v1/sandboxes/{body['id']}")
                    else:
                        st, body = node.call("POST", "/node/v1/sandboxes", node_spec)
                        dt = (time.perf_counter() - t0) * 1000
                        if st != 201 or body["state"] != "running":
                            raise RuntimeError(f"node create: {st} {body}")
                        if i >= 2:
                            node_ms.append(dt)
                        node.call("DELETE", f"/node/v1/sandboxes/{body['id']}")
            print(f"(a) create -> running, {a.rounds} interleaved rounds, pooled disks (ms)")
            print(f"    {'':34} {'median':>8} {'p99':>8}")
            print(f"    {'node   POST /node/v1/sandboxes':34} {statistics.median(node_ms):8.2f} "
                  f"{pct(node_ms, 99):8.2f}")
            print(f"    {'control POST /v1/sandboxes':34} {statistics.median(ctl_ms):8.2f} "
                  f"{pct(ctl_ms, 99):8.2f}")
            print(f"    ratio control/node: median {statistics.median(ctl_ms) / statistics.median(node_ms):.2f}x"
                  f", p99 {pct(ctl_ms, 99) / pct(node_ms, 99):.2f}x   (target <= 1.5x)")

            # (b) GET /v1/sandboxes/{id} under wrk, against /healthz on the same server.
            st, sb = api.call("POST", "/v1/sandboxes", spec)
            if st != 201:
                raise RuntimeError(f"create for (b): {st} {sb}")
            base = f"http://{host}:{port}"
            get_rps, health_rps = [], []
            for r in range(a.wrk_rounds):
                rps, errs, p50, p99 = wrk(f"{base}/v1/sandboxes/{sb['id']}", key, a.wrk_duration,
                                          a.connections)
                if errs:
                    raise RuntimeError(f"wrk: {errs} non-2xx responses on GET /v1/sandboxes/id")
                get_rps.append((rps, p50, p99))
                rps2, errs2, p50b, p99b = wrk(f"{base}/healthz", "", a.wrk_duration,
                                              a.connections)
                health_rps.append((rps2, p50b, p99b))
            g = statistics.median(x[0] for x in get_rps)
            h = statistics.median(x[0] for x in health_rps)
            print(f"(b) wrk -t2 -c{a.connections} -d{a.wrk_duration}, {a.wrk_rounds} rounds "
                  f"alternating (median req/s; latency p50/p99 of the median round)")
            gm = sorted(get_rps)[len(get_rps) // 2]
            hm = sorted(health_rps)[len(health_rps) // 2]
            print(f"    GET /v1/sandboxes/{{id}} (auth + store read): {g:10.0f} req/s  "
                  f"p50 {gm[1]} p99 {gm[2]}   (target >= 5000)")
            print(f"    GET /healthz (same server, peer):            {h:10.0f} req/s  "
                  f"p50 {hm[1]} p99 {hm[2]}")
            print(f"    ratio get/healthz: {g / h:.2f}")
            api.call("DELETE", f"/v1/sandboxes/{sb['id']}")
            deadline = time.time() + 20
            while time.time() < deadline and node.call("GET", "/node/v1/sandboxes")[1]["sandboxes"]:
                time.sleep(0.1)
            left = node.call("GET", "/node/v1/sandboxes")[1]["sandboxes"]
            if left:
                print(f"bench_control: {len(left)} sandboxes left on the node", file=sys.stderr)
                rc = 1
        except Exception as e:  # noqa: BLE001 — report and clean up
            print(f"bench_control: error: {e}", file=sys.stderr)
            rc = 1
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for d in glob.glob(f"/sys/fs/cgroup/*/{cgroup_root}") + \
                    glob.glob(f"/sys/fs/cgroup/{cgroup_root}"):
                try:
                    os.rmdir(d)
                except OSError as e:
                    print(f"bench_control: cgroup {d} left: {e}", file=sys.stderr)
                    rc = 1
            mounts = [l for l in open("/proc/self/mountinfo") if f" {data}" in l]
            loops = [l for l in subprocess.run(["losetup", "-a"], capture_output=True,
                                               text=True).stdout.splitlines() if data in l]
            if mounts or loops:
                print(f"bench_control: left behind: {len(mounts)} mounts, {len(loops)} loops",
                      file=sys.stderr)
                rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
