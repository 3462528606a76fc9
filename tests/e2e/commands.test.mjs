// sandbox.commands through the stock SDK (Connect server streams and unary calls through the
// traffic endpoint): foreground, streaming callbacks, background + wait, stdin, env, cwd, user,
// timeout, kill, non-zero exit, list, connect to a running process.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { CommandExitError, TimeoutError } from 'e2b'
import { Tracker, waitUntil } from './lib.mjs'

const t = new Tracker()
let sbx
before(async () => { sbx = await t.create({ metadata: { suite: 'commands' }, timeoutMs: 300_000 }) })
after(() => t.killAll())

describe('commands.run', () => {
  it('foreground: stdout, stderr, exit code 0', async () => {
    const r = await sbx.commands.run('echo out; echo err >&2')
    assert.equal(r.exitCode, 0)
    assert.equal(r.stdout, 'out\n')
    assert.equal(r.stderr, 'err\n')
    assert.equal(r.error, undefined)
  })

  it('streams output to onStdout/onStderr as it comes', async () => {
    const seen = []
    const r = await sbx.commands.run('for i in 1 2 3; do echo line$i; sleep 0.1; done; echo e >&2', {
      onStdout: d => seen.push(['out', d]),
      onStderr: d => seen.push(['err', d]),
    })
    assert.equal(r.stdout, 'line1\nline2\nline3\n')
    assert.equal(seen.filter(([k]) => k === 'out').map(([, d]) => d).join(''), r.stdout)
    assert.ok(seen.filter(([k]) => k === 'out').length >= 2, 'output came in several events')
    assert.deepEqual(seen.filter(([k]) => k === 'err'), [['err', 'e\n']])
  })

  it('a non-zero exit throws CommandExitError with the code and output', async () => {
    await assert.rejects(sbx.commands.run('echo partial; echo bad >&2; exit 7'), err => {
      assert.ok(err instanceof CommandExitError, `${err}`)
      assert.equal(err.exitCode, 7)
      assert.equal(err.stdout, 'partial\n')
      assert.equal(err.stderr, 'bad\n')
      return true
    })
  })

  it('env and cwd', async () => {
    const r = await sbx.commands.run('echo "$A-$B"; pwd', { envs: { A: 'x y', B: '$literal' }, cwd: '/tmp' })
    assert.equal(r.stdout, 'x y-$literal\n/tmp\n')
    await assert.rejects(sbx.commands.run('pwd', { cwd: '/no/such/dir' }))
  })

  it('user: root and the default user', async () => {
    assert.equal((await sbx.commands.run('id -u', { user: 'root' })).stdout, '0\n')
    assert.equal((await sbx.commands.run('id -un')).stdout, 'user\n')
  })

  it('background: the handle has a pid, wait() returns the result, list() shows it', async () => {
    const h = await sbx.commands.run('sleep 0.5; echo done', { background: true })
    assert.ok(Number.isInteger(h.pid) && h.pid > 0)
    const procs = await sbx.commands.list()
    const mine = procs.find(p => p.pid === h.pid)
    assert.ok(mine, `pid ${h.pid} not in ${JSON.stringify(procs)}`)
    assert.equal(mine.cmd, '/bin/bash')
    assert.deepEqual(mine.args, ['-l', '-c', 'sleep 0.5; echo done'])
    const r = await h.wait()
    assert.equal(r.exitCode, 0)
    assert.equal(r.stdout, 'done\n')
  })

  it('stdin: commands.sendStdin and handle.sendStdin, then closeStdin ends the input', async () => {
    const h = await sbx.commands.run('cat', { background: true, stdin: true })
    await sbx.commands.sendStdin(h.pid, 'first\n')
    await h.sendStdin(new TextEncoder().encode('second\n'))
    await sbx.commands.closeStdin(h.pid)
    const r = await h.wait()
    assert.equal(r.stdout, 'first\nsecond\n')
    const h2 = await sbx.commands.run('cat; echo eof', { background: true, stdin: true })
    await h2.sendStdin('x\n')
    await h2.closeStdin()
    assert.equal((await h2.wait()).stdout, 'x\neof\n')
    assert.equal(sbx.commands.supportsStdinClose, true)
  })

  it('connect to a running process sees its later output', async () => {
    const h = await sbx.commands.run('sleep 0.5; echo later', { background: true })
    const again = await sbx.commands.connect(h.pid)
    const r = await again.wait()
    assert.equal(r.stdout, 'later\n')
    await h.wait()
  })

  it('kill: a running process ends by signal; killing a missing pid is false', async () => {
    const h = await sbx.commands.run('sleep 60', { background: true })
    assert.equal(await sbx.commands.kill(h.pid), true)
    await assert.rejects(h.wait(), err => {
      assert.ok(err instanceof CommandExitError, `${err}`)
      assert.notEqual(err.exitCode, 0)
      return true
    })
    assert.ok(!(await sbx.commands.list()).some(p => p.pid === h.pid))
    assert.equal(await sbx.commands.kill(999_999), false)
    await assert.rejects(sbx.commands.sendStdin(999_999, 'x'))
  })

  it('handle.kill() and disconnect()', async () => {
    const h = await sbx.commands.run('sleep 60', { background: true })
    await h.disconnect()
    assert.ok((await sbx.commands.list()).some(p => p.pid === h.pid), 'disconnect leaves it running')
    assert.equal(await h.kill(), true)
    assert.ok(await waitUntil(async () => !(await sbx.commands.list()).some(p => p.pid === h.pid), 5_000))
  })

  it('timeoutMs ends the command (TimeoutError) and the process is gone', async () => {
    const started = Date.now()
    await assert.rejects(sbx.commands.run('sleep 30; echo never', { timeoutMs: 1_000 }), err => {
      assert.ok(err instanceof TimeoutError, `${err}`)
      return true
    })
    assert.ok(Date.now() - started < 10_000, 'the timeout took effect')
    const gone = await waitUntil(async () =>
      !(await sbx.commands.list()).some(p => p.args?.join(' ').includes('sleep 30; echo never')), 10_000)
    assert.ok(gone, 'the timed-out process still runs in the sandbox (Connect-Timeout-Ms)')
  })

  it('long output is delivered whole and a long-running command gets keepalives', async () => {
    const r = await sbx.commands.run('i=0; while [ $i -lt 20000 ]; do echo "line $i"; i=$((i+1)); done')
    const lines = r.stdout.split('\n')
    assert.equal(lines.length, 20001)
    assert.equal(lines[19999], 'line 19999')
    // 3 s of silence: the SDK asks for keepalives every 50 s, so this only checks that a quiet
    // stream stays open through the proxy.
    const q = await sbx.commands.run('sleep 3; echo awake')
    assert.equal(q.stdout, 'awake\n')
  })
})

describe('pty', () => {
  it('create, sendInput, resize, output arrives; kill ends it', async () => {
    let out = ''
    const dec = new TextDecoder()
    const pty = await sbx.pty.create({ cols: 80, rows: 24, onData: d => { out += dec.decode(d) } })
    assert.ok(pty.pid > 0)
    await sbx.pty.resize(pty.pid, { cols: 100, rows: 30 })
    await sbx.pty.sendInput(pty.pid, new TextEncoder().encode('echo $((6*7)); exit\n'))
    await pty.wait().catch(() => {})
    assert.match(out, /42/)
    const p2 = await sbx.pty.create({ cols: 80, rows: 24, onData: () => {} })
    assert.equal(await sbx.pty.kill(p2.pid), true)
  })
})
