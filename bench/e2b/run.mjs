// bench/e2b: the stock e2b SDK's create → first command output on Hangar, against the node's own
// create → first output in the same run. See README.md.
//
//   node bench/e2b/run.mjs --bin BUILD/bin [--rounds 40] [--warm 2] [--no-warm]
//
// Starts an embedded hangard (root: real sandboxes) with its own data dir, cgroup root and uid
// range, the busybox template + host bash as `base`, and a warm pool of `base`. Then interleaved
// rounds of
//   e2b:  Sandbox.create() → commands.run('echo hi') until its first stdout chunk
//         (POST /v2/sandboxes: auth, router, durable queue, scheduler, node call, warm claim;
//          then Connect Start through the traffic proxy → node → envd);
//   node: POST /node/v1/sandboxes (node token) → POST /node/v1/sandboxes/{id}/exec
//         (bash -l -c 'echo hi') until its first stdout event (the node API the control plane
//          calls; the same warm pool, template and resources).
// Each sandbox is killed after it is timed (off the timed path) and each round first waits for
// the warm pool to be full again, so both paths claim a warm sandbox. The first two rounds warm
// up and are discarded. Prints p50 / p99 of each and the ratio e2b / node. Figures, not
// assertions: the exit status is non-zero only on errors or leftovers.
import { spawn, execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, '../..')
// The SDK comes from the e2e suite's pinned install (scripts/install-deps.sh).
const require = createRequire(path.join(root, 'tests/e2e/package.json'))
const { Sandbox } = await import(require.resolve('e2b'))

function arg(name, dflt) {
  const i = process.argv.indexOf(name)
  return i >= 0 ? process.argv[i + 1] : dflt
}
const bin = arg('--bin')
const rounds = Number(arg('--rounds', '40'))
const warm = process.argv.includes('--no-warm') ? 0 : Number(arg('--warm', '2'))
if (!bin) { console.error('usage: run.mjs --bin BUILD/bin [--rounds N] [--warm N] [--no-warm]'); process.exit(2) }
if (process.getuid() !== 0) { console.error('bench/e2b: needs root (real sandboxes)'); process.exit(2) }
for (const f of ['hangard', 'envd', 'hangar_it_template']) {
  if (!fs.existsSync(path.join(bin, f))) { console.error(`bench/e2b: ${bin}/${f} missing`); process.exit(2) }
}

const pct = (v, p) => {
  const s = [...v].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.round(p / 100 * (s.length - 1))))]
}
const sleep = ms => new Promise(r => setTimeout(r, ms))

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hangar-bench-e2b-'))
const data = path.join(tmp, 'data')
const cgroupRoot = `hangar-bench-e2b-${process.pid}`
execFileSync(path.join(bin, 'hangar_it_template'), [data, 'base', '--host-program', '/usr/bin/bash'], { stdio: 'inherit' })
const log = fs.openSync(path.join(tmp, 'hangard.log'), 'w')
const flags = ['--role', 'embedded', '--listen', '127.0.0.1:0', '--data-dir', data,
  '--http-access-log', 'false', '--log-level', 'warn', '--node-base-template', '',
  '--node-drivers', 'ns', '--node-disk-pool', '1024:1', '--node-cgroup-root', cgroupRoot,
  '--node-uid-base', String(2 ** 30 + 62 * 256 * 65536), '--node-uid-slots', '256',
  '--node-heartbeat-ms', '500', '--control-overcommit-cpu-percent', '400']
if (warm > 0) flags.push('--node-warm-pool', `base:${warm}`)
const proc = spawn(path.join(bin, 'hangard'), flags, { stdio: ['ignore', 'pipe', log] })
const url = await new Promise((resolve, reject) => {
  let buf = ''
  proc.stdout.on('data', d => {
    buf += d
    const m = buf.match(/listening on (http:\/\/[\d.]+:\d+)/)
    if (m) resolve(m[1])
  })
  proc.once('exit', c => reject(new Error(`hangard exited (${c}) before listening; see ${tmp}/hangard.log`)))
})
const token = f => fs.readFileSync(path.join(data, f), 'utf8').trim()
const apiKey = token('api.key')
const nodeToken = token('node.token')
const sdkOpts = { apiKey, apiUrl: url, sandboxUrl: url }
const nodeCall = async (method, p, body) => {
  const r = await fetch(url + p, {
    method, body: body && JSON.stringify(body),
    headers: { Authorization: `Bearer ${nodeToken}`, 'Content-Type': 'application/json' },
  })
  return r
}

// Warm sandboxes are started (their cgroups exist) but not listed by the node API: the pool is
// full when the sandboxes' cgroup directories number `warm` and the node lists none.
function cgroupCount() {
  for (const h of ['/sys/fs/cgroup/memory', '/sys/fs/cgroup']) {
    const d = path.join(h, cgroupRoot)
    if (fs.existsSync(d)) return fs.readdirSync(d, { withFileTypes: true }).filter(e => e.isDirectory()).length
  }
  return 0
}
async function waitPool(limitMs = 30_000) {
  const deadline = Date.now() + limitMs
  while (Date.now() < deadline) {
    const listed = (await (await nodeCall('GET', '/node/v1/sandboxes')).json()).sandboxes.length
    if (listed === 0 && cgroupCount() >= warm) return true
    await sleep(25)
  }
  return false
}

async function e2bRound() {
  const t0 = performance.now()
  const sbx = await Sandbox.create(sdkOpts)
  const tCreated = performance.now()
  let tFirst = 0
  const r = await sbx.commands.run('echo hi', { onStdout: () => { if (!tFirst) tFirst = performance.now() } })
  if (r.stdout !== 'hi\n') throw new Error(`e2b: unexpected output ${JSON.stringify(r.stdout)}`)
  await sbx.kill()
  return { total: tFirst - t0, create: tCreated - t0 }
}

async function nodeRound() {
  const t0 = performance.now()
  const c = await nodeCall('POST', '/node/v1/sandboxes', {
    template: 'base', driver: 'ns', timeout_s: 600,
    resources: { cpu_millis: 1000, memory_mb: 512, disk_mb: 1024 },
  })
  const sb = await c.json()
  if (c.status !== 201) throw new Error(`node create: ${c.status} ${JSON.stringify(sb)}`)
  const tCreated = performance.now()
  const e = await nodeCall('POST', `/node/v1/sandboxes/${sb.id}/exec`, { cmd: '/bin/bash', args: ['-l', '-c', 'echo hi'] })
  let tFirst = 0
  let buf = ''
  let out = ''
  for await (const chunk of e.body) {
    buf += Buffer.from(chunk).toString()
    let nl
    while ((nl = buf.indexOf('\n')) >= 0) {
      const ev = JSON.parse(buf.slice(0, nl))
      buf = buf.slice(nl + 1)
      if (ev.event === 'stdout') {
        if (!tFirst) tFirst = performance.now()
        out += Buffer.from(ev.data, 'base64').toString()
      }
    }
  }
  if (out !== 'hi\n') throw new Error(`node exec: unexpected output ${JSON.stringify(out)}`)
  await nodeCall('DELETE', `/node/v1/sandboxes/${sb.id}`)
  return { total: tFirst - t0, create: tCreated - t0 }
}

let rc = 0
try {
  // The node registers (first heartbeat) before the control plane can place anything.
  for (let i = 0; i < 100; i++) {
    const r = await fetch(url + '/v1/nodes', { headers: { Authorization: `Bearer ${apiKey}` } })
    if ((await r.json()).nodes?.some(n => n.status === 'ready')) break
    await sleep(100)
  }
  const res = { e2b: [], node: [] }
  for (let i = 0; i < rounds + 2; i++) {
    for (const which of i % 2 === 0 ? ['e2b', 'node'] : ['node', 'e2b']) {
      if (warm > 0 && !await waitPool()) throw new Error('the warm pool did not refill within 30 s')
      const r = which === 'e2b' ? await e2bRound() : await nodeRound()
      if (i >= 2) res[which].push(r)
    }
  }
  const load = fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')
  console.log(`# ${new Date().toISOString()} ${os.cpus().length} CPUs, load ${load}, ${rounds} interleaved rounds, warm pool ${warm || 'off'}`)
  console.log(`create → first output of 'echo hi' (ms)        p50      p99   (create alone: p50 / p99)`)
  const row = (name, v) => console.log(`  ${name.padEnd(40)} ${pct(v.map(x => x.total), 50).toFixed(1).padStart(7)}  ${pct(v.map(x => x.total), 99).toFixed(1).padStart(7)}   (${pct(v.map(x => x.create), 50).toFixed(1)} / ${pct(v.map(x => x.create), 99).toFixed(1)})`)
  row('node API: POST sandboxes + exec', res.node)
  row('e2b SDK: Sandbox.create + commands.run', res.e2b)
  const e50 = pct(res.e2b.map(x => x.total), 50)
  const n50 = pct(res.node.map(x => x.total), 50)
  console.log(`  ratio e2b / node: p50 ${(e50 / n50).toFixed(2)}x, p99 ${(pct(res.e2b.map(x => x.total), 99) / pct(res.node.map(x => x.total), 99)).toFixed(2)}x` +
    `   e2b p50 target <= 150 ms: ${e50 <= 150 ? 'met' : 'NOT met'}`)
  const left = (await (await nodeCall('GET', '/node/v1/sandboxes')).json()).sandboxes
  if (left.length) { console.error(`bench/e2b: ${left.length} sandboxes left on the node`); rc = 1 }
} catch (e) {
  console.error(`bench/e2b: error: ${e.stack || e}`)
  rc = 1
} finally {
  proc.kill('SIGTERM')
  await new Promise(r => { if (proc.exitCode !== null) r(); else proc.once('exit', r) })
  for (const h of fs.readdirSync('/sys/fs/cgroup')) {
    for (const d of [path.join('/sys/fs/cgroup', h, cgroupRoot)]) {
      try { if (fs.existsSync(d)) fs.rmdirSync(d) } catch (e) { console.error(`bench/e2b: cgroup ${d} left: ${e.message}`); rc = 1 }
    }
  }
  try { fs.rmdirSync(path.join('/sys/fs/cgroup', cgroupRoot)) } catch { /* none (cgroup v1) or left */ }
  const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(l => l.includes(` ${data}`))
  const loops = execFileSync('losetup', ['-a'], { encoding: 'utf8' }).split('\n').filter(l => l.includes(data))
  if (mounts.length || loops.length) {
    console.error(`bench/e2b: left behind: ${mounts.length} mounts, ${loops.length} loops (${tmp} kept)`)
    rc = 1
  } else {
    fs.rmSync(tmp, { recursive: true, force: true })
  }
}
process.exit(rc)
