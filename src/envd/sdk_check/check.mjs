// The stock e2b JS SDK (npm `e2b`, v2) against envd: the compatibility check.
//
//   cd <dir> && npm install e2b@2 && ENVD=<build>/bin/envd node src/envd/sdk_check/check.mjs
//
// A fake lifecycle API answers Sandbox.connect with envdVersion 0.6.4 and an access token;
// `sandboxUrl` points the SDK straight at envd on TCP, with a temp dir as its root. Prints one
// PASS/FAIL line per check and exits non-zero on any failure. Not a ctest: it needs the npm
// registry for the SDK.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import http from 'node:http'
import { spawn } from 'node:child_process'
import { Sandbox, CommandExitError, FileType } from 'e2b'

// The sandbox root: an account file, the homes, /tmp. Commands run on the host (bash -l -c).
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'envd-sdk-'))
for (const d of ['etc', 'home/user', 'root', 'tmp']) fs.mkdirSync(path.join(root, d), { recursive: true })
fs.writeFileSync(path.join(root, 'etc/passwd'),
  `root:x:0:0:root:/root:/bin/sh\nuser:x:${process.getuid()}:${process.getgid()}::/home/user:/bin/sh\n`)
const envd = spawn(process.env.ENVD, ['--listen', 'tcp:127.0.0.1:0', '--root', root, '--log-level', 'warn'],
  { env: { ...process.env, ENVD_ACCESS_TOKEN: 'tok' }, stdio: ['ignore', 'pipe', 'inherit'] })
const endpoint = await new Promise(r => envd.stdout.once('data', d => r(d.toString().trim().split(' ')[1])))
const api = http.createServer((req, res) => {
  let b = ''; req.on('data', c => b += c); req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ sandboxID: 'sb1', templateID: 't', clientID: 'c', envdVersion: '0.6.4', envdAccessToken: 'tok' }))
  })
}).listen(0, '127.0.0.1')
await new Promise(r => api.once('listening', r))
const ok = (cond, what) => { console.log((cond ? 'PASS ' : 'FAIL ') + what); if (!cond) process.exitCode = 1 }
try {
  const sbx = await Sandbox.connect('sb1', { apiKey: 'e2b_' + '0'.repeat(40), apiUrl: `http://127.0.0.1:${api.address().port}`, sandboxUrl: `http://${endpoint}` })
  const r = await sbx.commands.run('echo hello; echo err >&2')
  ok(r.stdout === 'hello\n' && r.stderr === 'err\n' && r.exitCode === 0, 'commands.run stdout/stderr/exitCode')
  try { await sbx.commands.run('exit 3'); ok(false, 'non-zero exit throws') } catch (e) { ok(e instanceof CommandExitError && e.exitCode === 3, 'CommandExitError exitCode 3') }
  const env = await sbx.commands.run('echo $FOO:$USER', { envs: { FOO: 'bar' }, cwd: '/tmp' })
  ok(env.stdout === 'bar:user\n', 'envs and cwd')
  const who = await sbx.commands.run('id -u', { user: 'root' })
  ok(who.stdout === '0\n', 'user root')
  const bg = await sbx.commands.run('read x; sleep 0.2; echo got:$x', { background: true, stdin: true })
  const list = await sbx.commands.list()
  ok(list.some(p => p.pid === bg.pid), 'commands.list shows the background process')
  await sbx.commands.sendStdin(bg.pid, 'hi\n')
  const bgr = await bg.wait()
  ok(bgr.stdout === 'got:hi\n', 'sendStdin + wait')
  const killme = await sbx.commands.run('sleep 30', { background: true })
  ok(await sbx.commands.kill(killme.pid) === true, 'commands.kill')
  ok(await sbx.commands.kill(999999) === false, 'kill of a missing pid is false')
  const info = await sbx.files.write('/tmp/x.txt', 'data')
  ok(info.path === '/tmp/x.txt', 'files.write (multipart) returns the path')
  ok(await sbx.files.read('/tmp/x.txt') === 'data', 'files.read text')
  const bytes = new Uint8Array(3 << 20).map((_, i) => i % 251)
  await sbx.files.write('big.bin', bytes, { useOctetStream: true })
  const back = await sbx.files.read('big.bin', { format: 'bytes' })
  ok(back.length === bytes.length && back.every((v, i) => v === bytes[i]), 'octet-stream write + bytes read (3 MiB)')
  const gz = await sbx.files.read('big.bin', { format: 'bytes', gzip: true })
  ok(gz.length === bytes.length, 'gzip read')
  await sbx.files.write('meta.txt', 'm', { metadata: { owner: 'alice' } })
  const mi = await sbx.files.getInfo('meta.txt')
  ok(mi.metadata && mi.metadata.owner === 'alice', 'file metadata')
  ok(await sbx.files.makeDir('/tmp/d/e') === true && await sbx.files.makeDir('/tmp/d/e') === false, 'files.makeDir')
  ok(await sbx.files.exists('/tmp/x.txt') && !(await sbx.files.exists('/tmp/nope')), 'files.exists')
  const entries = await sbx.files.list('/tmp', { depth: 2 })
  ok(entries.some(e => e.path === '/tmp/d/e' && e.type === FileType.DIR) && entries.some(e => e.name === 'x.txt' && e.size === 4), 'files.list depth 2')
  const moved = await sbx.files.rename('/tmp/x.txt', '/tmp/d/y.txt')
  ok(moved.path === '/tmp/d/y.txt', 'files.rename')
  const events = []
  const w = await sbx.files.watchDir('/tmp/d', ev => events.push(ev), { recursive: true })
  await sbx.files.write('/tmp/d/e/new.txt', 'n')
  await sbx.files.remove('/tmp/d/y.txt')
  await new Promise(r => setTimeout(r, 300))
  await w.stop()
  ok(events.some(e => e.name === 'e/new.txt' && e.type === 'create') && events.some(e => e.name === 'y.txt' && e.type === 'remove'), 'watchDir recursive create/remove')
  try { await sbx.files.read('/tmp/nope'); ok(false, 'missing file throws') } catch (e) { ok(e.name === 'FileNotFoundError', 'read of a missing file: FileNotFoundError') }
  let ptyOut = ''
  const pty = await sbx.pty.create({ cols: 80, rows: 24, onData: d => { ptyOut += new TextDecoder().decode(d) } })
  await sbx.pty.resize(pty.pid, { cols: 100, rows: 30 })
  await sbx.pty.sendInput(pty.pid, new TextEncoder().encode('stty size; exit\n'))
  await pty.wait().catch(() => {})
  ok(ptyOut.includes('30 100'), 'pty create/resize/input')
  ok(await sbx.isRunning(), 'isRunning (health)')
} catch (e) { console.log('FAIL exception', e); process.exitCode = 1 }
envd.kill('SIGTERM'); api.close()
fs.rmSync(root, { recursive: true, force: true })
