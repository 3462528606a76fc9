// Bad input and isolation: wrong API key, missing or wrong access token, unknown sandbox,
// internal envd routes, oversized upload, malformed Connect frames, and two teams that cannot
// see or touch each other's sandboxes. Status codes and error shapes as E2B answers them.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import { Sandbox, AuthenticationError, SandboxNotFoundError } from 'e2b'
import {
  Tracker, env, teamB, apiFetch, sandboxFetch, hangarFetch, connectFrame, parseFrames,
  assertApiError,
} from './lib.mjs'

const t = new Tracker()
let a // team A's sandbox
let b // team B's sandbox
before(async () => {
  // E2B's API default is 15 s; these must outlive the file.
  a = await t.create({ metadata: { suite: 'badinput', team: 'a' }, timeoutMs: 300_000 })
  b = await t.create({ ...teamB, metadata: { suite: 'badinput', team: 'b' }, timeoutMs: 300_000 })
})
after(() => t.killAll())

const stat = (sandboxId, token, body = { path: '/tmp' }) => sandboxFetch('/filesystem.Filesystem/Stat', {
  sandboxId, token, method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
})

describe('API key', () => {
  it('a wrong key: AuthenticationError from the SDK, 401 {code,message} on the wire', async () => {
    const bad = { apiKey: 'hgk_' + '0'.repeat(48) }
    await assert.rejects(Sandbox.create(bad), AuthenticationError)
    await assert.rejects(Sandbox.list(bad).nextItems(), AuthenticationError)
    await assert.rejects(Sandbox.getInfo(a.sandboxId, bad), AuthenticationError)
    await assert.rejects(Sandbox.kill(a.sandboxId, bad), AuthenticationError)
    assertApiError(await apiFetch('/v2/sandboxes', { key: 'e2b_' + 'f'.repeat(40) }), 401)
    assertApiError(await apiFetch('/v2/sandboxes', { key: null }), 401)
    assertApiError(await apiFetch(`/sandboxes/${a.sandboxId}`, { key: 'nonsense', method: 'DELETE' }), 401)
    assert.equal(await a.isRunning(), true, 'a rejected kill left it running')
  })

  it('malformed create bodies are 400 {code,message}', async () => {
    const r1 = await apiFetch('/v2/sandboxes', { method: 'POST', body: { templateID: 'base', timeout: -5 } })
    assertApiError(r1, 400)
    const r2 = await fetch(new URL('/v2/sandboxes', env.apiUrl), {
      method: 'POST', headers: { 'X-API-Key': env.keyA, 'Content-Type': 'application/json' }, body: '{"templateID":',
    })
    assert.equal(r2.status, 400)
    const j = await r2.json()
    assert.equal(j.code, 400)
    const r3 = await apiFetch('/v2/sandboxes', { method: 'POST', body: { templateID: 'base', metadata: { k: 7 } } })
    assertApiError(r3, 400)
  })

  it('an unknown sandbox is 404 {code,message} on every lifecycle route', async () => {
    const id = 'nosuchsandbox0000000'
    assertApiError(await apiFetch(`/sandboxes/${id}`), 404)
    assertApiError(await apiFetch(`/sandboxes/${id}`, { method: 'DELETE' }), 404)
    assertApiError(await apiFetch(`/sandboxes/${id}/timeout`, { method: 'POST', body: { timeout: 10 } }), 404)
    assertApiError(await apiFetch(`/v2/sandboxes/${id}/connect`, { method: 'POST', body: { timeout: 10 } }), 404)
    assertApiError(await apiFetch(`/sandboxes/${id}/pause`, { method: 'POST', body: {} }), 404)
  })
})

describe('access token on the traffic endpoint', () => {
  it('the right token works (the baseline of the checks below)', async () => {
    const r = await stat(a.sandboxId, a.envdAccessToken)
    assert.equal(r.status, 200, r.raw.toString())
    assert.equal(r.json.entry.path, '/tmp')
  })

  it('a missing token is 401, a wrong one 401, another sandbox\'s token 401', async () => {
    for (const token of [undefined, '', 'x'.repeat(64), b.envdAccessToken]) {
      const r = await stat(a.sandboxId, token)
      assert.equal(r.status, 401, `token ${token}: ${r.status} ${r.raw}`)
    }
    // Files too (no token and no signature).
    const f = await sandboxFetch('/files?path=/etc/passwd', { sandboxId: a.sandboxId })
    assert.equal(f.status, 401)
    const up = await sandboxFetch('/files?path=/tmp/nope.txt', {
      sandboxId: a.sandboxId, method: 'POST', headers: { 'Content-Type': 'application/octet-stream' }, body: 'x',
    })
    assert.equal(up.status, 401)
    assert.equal(await a.files.exists('/tmp/nope.txt'), false)
  })

  it('the SDK with a wrong token raises AuthenticationError', async () => {
    const forged = new Sandbox({
      sandboxId: a.sandboxId, envdVersion: '0.6.4', envdAccessToken: 'wrong',
      apiUrl: env.apiUrl, sandboxUrl: env.sandboxUrl, apiKey: env.keyA,
    })
    await assert.rejects(forged.files.read('/etc/passwd'), AuthenticationError)
    await assert.rejects(forged.commands.run('echo hi'), AuthenticationError)
  })

  it('no sandbox id, an unknown one, a wrong port', async () => {
    const none = await sandboxFetch('/filesystem.Filesystem/Stat', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"path":"/"}',
    })
    assert.ok(none.status === 400 || none.status === 404, `${none.status} ${none.raw}`)
    // E2B's proxy answers 502 for a sandbox it does not know; the SDK reads that as "not running".
    const unknown = await stat('nosuchsandbox0000000', 'x')
    assert.equal(unknown.status, 502, `${unknown.status} ${unknown.raw}`)
    const forged = new Sandbox({
      sandboxId: 'nosuchsandbox0000000', envdVersion: '0.6.4', envdAccessToken: 'x',
      apiUrl: env.apiUrl, sandboxUrl: env.sandboxUrl, apiKey: env.keyA,
    })
    assert.equal(await forged.isRunning(), false)
    const port = await sandboxFetch('/health', { sandboxId: a.sandboxId, port: 8080, token: a.envdAccessToken })
    assert.ok(port.status >= 400, `port 8080: ${port.status}`)
  })

  it('internal envd routes are not reachable', async () => {
    for (const [method, p] of [['POST', '/init'], ['GET', '/envs'], ['POST', '/freeze'], ['POST', '/upgrade'],
      ['GET', '/metrics'], ['GET', '/node/v1/sandboxes']]) {
      const r = await sandboxFetch(p, {
        sandboxId: a.sandboxId, token: a.envdAccessToken, method,
        headers: { 'Content-Type': 'application/json' }, body: method === 'POST' ? '{}' : undefined,
      })
      assert.ok(r.status === 404 || r.status === 403 || r.status === 401, `${method} ${p}: ${r.status} ${r.raw}`)
    }
  })
})

describe('malformed calls', () => {
  it('a malformed Connect frame is a Connect error, and the sandbox is unharmed', async () => {
    const headers = { 'Content-Type': 'application/connect+json', 'Connect-Protocol-Version': '1' }
    // A frame whose length says 1000 bytes but carries 3.
    const truncated = Buffer.concat([Buffer.from([0, 0, 0, 3, 232]), Buffer.from('{"x')])
    const r1 = await sandboxFetch('/process.Process/Start', {
      sandboxId: a.sandboxId, token: a.envdAccessToken, method: 'POST', headers, body: truncated,
    })
    const end1 = r1.status === 200 ? parseFrames(r1.raw).find(f => f.flags & 2) : null
    assert.ok(r1.status >= 400 || end1?.json?.error, `truncated frame: ${r1.status} ${r1.raw}`)
    if (end1) assert.equal(typeof end1.json.error.code, 'string')
    // Well framed, but not JSON.
    const r2 = await sandboxFetch('/process.Process/Start', {
      sandboxId: a.sandboxId, token: a.envdAccessToken, method: 'POST', headers, body: connectFrame('not json'),
    })
    const end2 = r2.status === 200 ? parseFrames(r2.raw).find(f => f.flags & 2) : null
    const code2 = end2 ? end2.json?.error?.code : r2.json?.code
    assert.equal(code2, 'invalid_argument', `non-JSON frame: ${r2.status} ${r2.raw}`)
    // Unary with a body that is not JSON.
    const r3 = await sandboxFetch('/filesystem.Filesystem/Stat', {
      sandboxId: a.sandboxId, token: a.envdAccessToken, method: 'POST',
      headers: { 'Content-Type': 'application/json' }, body: '{"path":',
    })
    assert.equal(r3.status, 400, r3.raw.toString())
    assert.equal(r3.json.code, 'invalid_argument')
    // An unknown method of a public service.
    const r4 = await sandboxFetch('/process.Process/Nope', {
      sandboxId: a.sandboxId, token: a.envdAccessToken, method: 'POST',
      headers: { 'Content-Type': 'application/json' }, body: '{}',
    })
    assert.ok(r4.status === 404 || r4.json?.code === 'unimplemented', `${r4.status} ${r4.raw}`)
    // The sandbox still works.
    assert.equal((await a.commands.run('echo fine')).stdout, 'fine\n')
  })

  it('a valid streamed Start through the proxy (baseline of the malformed frames)', async () => {
    const headers = { 'Content-Type': 'application/connect+json', 'Connect-Protocol-Version': '1' }
    const body = connectFrame({ process: { cmd: '/bin/bash', args: ['-c', 'echo raw'] } })
    const r = await sandboxFetch('/process.Process/Start', {
      sandboxId: a.sandboxId, token: a.envdAccessToken, method: 'POST', headers, body,
    })
    assert.equal(r.status, 200, r.raw.toString())
    const frames = parseFrames(r.raw)
    const out = frames.map(f => f.json?.event?.data?.stdout).filter(Boolean)
      .map(s => Buffer.from(s, 'base64').toString()).join('')
    assert.equal(out, 'raw\n')
    assert.equal(frames.at(-1).flags & 2, 2, 'the last frame is the end of stream')
  })

  it('an oversized upload is refused (413) and nothing is written', async () => {
    // The proxy's limit (1 GiB unless the driver lowers it): a Content-Length above it must be
    // refused from the headers, without the body being read or forwarded.
    const limit = Number(process.env.HANGAR_E2E_MAX_UPLOAD_BYTES || 2 ** 30)
    const u = new URL('/files?path=/tmp/too-big.bin', env.sandboxUrl)
    const status = await new Promise((resolve, reject) => {
      const req = http.request(u, {
        method: 'POST',
        headers: {
          'E2b-Sandbox-Id': a.sandboxId, 'E2b-Sandbox-Port': '49983', 'X-Access-Token': a.envdAccessToken,
          'Content-Type': 'application/octet-stream', 'Content-Length': String(limit + 1),
        },
      }, res => { res.resume(); resolve(res.statusCode) })
      req.on('error', e => (e.code === 'ECONNRESET' || e.code === 'EPIPE' ? resolve('reset') : reject(e)))
      req.setTimeout(20_000, () => { req.destroy(); reject(new Error('no answer within 20 s to an oversized Content-Length')) })
      req.write(Buffer.alloc(64 << 10, 0x61))
    })
    assert.ok(status === 413 || status === 'reset', `status ${status}`)
    assert.equal(await a.files.exists('/tmp/too-big.bin'), false)
  })
})

describe('two teams', () => {
  it('team B cannot list, get, connect, time out, pause or kill team A\'s sandbox', async () => {
    const endBefore = (await a.getInfo()).endAt.getTime()
    const listedB = []
    const p = Sandbox.list({ ...teamB, query: { metadata: { suite: 'badinput' } } })
    while (p.hasNext) listedB.push(...await p.nextItems())
    assert.deepEqual(listedB.map(s => s.sandboxId), [b.sandboxId])
    const listedA = []
    const pa = Sandbox.list({ query: { metadata: { suite: 'badinput' } } })
    while (pa.hasNext) listedA.push(...await pa.nextItems())
    assert.deepEqual(listedA.map(s => s.sandboxId), [a.sandboxId])
    await assert.rejects(Sandbox.getInfo(a.sandboxId, teamB), SandboxNotFoundError)
    await assert.rejects(Sandbox.connect(a.sandboxId, teamB), SandboxNotFoundError)
    await assert.rejects(Sandbox.setTimeout(a.sandboxId, 1_000, teamB), SandboxNotFoundError)
    await assert.rejects(Sandbox.pause(a.sandboxId, teamB), SandboxNotFoundError)
    assert.equal(await Sandbox.kill(a.sandboxId, teamB), false)
    assertApiError(await apiFetch(`/sandboxes/${a.sandboxId}`, { key: env.keyB }), 404)
    // Hangar's own API agrees.
    assert.equal((await hangarFetch(`/v1/sandboxes/${a.sandboxId}`, env.keyB)).status, 404)
    // A is untouched: still running, its timeout not shortened.
    assert.equal(await a.isRunning(), true)
    const info = await a.getInfo()
    assert.equal(info.state, 'running')
    assert.equal(info.endAt.getTime(), endBefore, 'B\'s setTimeout changed A\'s end')
  })

  it('traffic: B\'s token opens only B\'s sandbox', async () => {
    assert.equal((await stat(b.sandboxId, b.envdAccessToken)).status, 200)
    assert.equal((await stat(a.sandboxId, b.envdAccessToken)).status, 401)
    assert.equal((await stat(b.sandboxId, a.envdAccessToken)).status, 401)
  })

  it('nothing leaks between sandboxes: files and processes are per sandbox', async () => {
    await a.files.write('/tmp/secret-a', 'for A only')
    assert.equal(await b.files.exists('/tmp/secret-a'), false)
    const h = await a.commands.run('sleep 30', { background: true })
    assert.ok(!(await b.commands.list()).some(p => p.pid === h.pid && p.args?.includes('sleep 30')))
    assert.ok((await a.commands.list()).some(p => p.pid === h.pid))
    await h.kill()
  })
})
