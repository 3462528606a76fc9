// Lifecycle through the stock SDK: create (default template, metadata, envs, timeout), getInfo,
// list (metadata filter, state, pagination), connect, kill, setTimeout expiry, pause/resume,
// templates without bash, and the sandbox as a Hangar task (/v1).
import { describe, it, afterEach } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { Sandbox, SandboxNotFoundError, SandboxError } from 'e2b'
import { Tracker, hangarFetch, apiFetch, waitUntil } from './lib.mjs'

const t = new Tracker()
afterEach(() => t.killAll())  // each test's sandboxes end with it (1 CPU each)
const run = randomUUID().slice(0, 8)

async function listAll(query, opts = {}) {
  const p = Sandbox.list({ query, ...opts })
  const out = []
  while (p.hasNext) out.push(...await p.nextItems())
  return out
}

describe('create', () => {
  it('default template (base) runs bash commands; id is E2B-shaped', async () => {
    const sbx = await t.create()
    assert.match(sbx.sandboxId, /^[a-z0-9]+$/)
    const r = await sbx.commands.run('echo hi from $0')
    assert.equal(r.exitCode, 0)
    assert.match(r.stdout, /^hi from \/bin\/bash\n$|^hi from bash\n$/)
    assert.equal(await sbx.isRunning(), true)
    // Without timeoutMs the SDK sends none: E2B's API default, 15 s.
    const info = await sbx.getInfo()
    assert.equal(info.endAt.getTime() - info.startedAt.getTime(), 15_000)
    assert.equal(info.templateId, 'base')
  })

  it('metadata, envs and timeout are applied and reported by getInfo', async () => {
    const before = Date.now()
    const sbx = await t.create('base', {
      metadata: { suite: 'lifecycle', run, who: 'alice' },
      envs: { GREETING: 'hello world', EMPTY: '' },
      timeoutMs: 120_000,
    })
    const r = await sbx.commands.run('echo "$GREETING|$EMPTY|"')
    assert.equal(r.stdout, 'hello world||\n')
    const info = await sbx.getInfo()
    assert.equal(info.sandboxId, sbx.sandboxId)
    assert.equal(info.state, 'running')
    assert.equal(info.metadata.suite, 'lifecycle')
    assert.equal(info.metadata.who, 'alice')
    // The tier the router chose is visible in the metadata.
    assert.equal(info.metadata['hangar.tier'], 'shared')
    assert.ok(info.startedAt instanceof Date && !Number.isNaN(info.startedAt.getTime()))
    const ttl = info.endAt.getTime() - before
    assert.ok(ttl > 100_000 && ttl < 140_000, `endAt is ${ttl} ms after create, want ~120 s`)
    assert.ok(info.cpuCount >= 1, `cpuCount ${info.cpuCount}`)
    assert.ok(info.memoryMB >= 64, `memoryMB ${info.memoryMB}`)
    // The same sandbox is a Hangar task: labels = metadata, tier shared.
    const task = await hangarFetch(`/v1/sandboxes/${sbx.sandboxId}`)
    assert.equal(task.status, 200, task.text)
    assert.equal(task.json.state, 'running')
    assert.equal(task.json.tier, 'shared')
    assert.equal(task.json.labels?.who, 'alice', task.text)
  })

  it('metadata are routing labels: a sandbox the policy sends to the isolated tier (no node here) is refused, saying why', async () => {
    const tag = randomUUID().slice(0, 8)
    await assert.rejects(Sandbox.create({ metadata: { sensitivity: 'high', tag }, requestTimeoutMs: 120_000 }), err => {
      assert.match(err.message, /isolated/, `${err}`)
      return true
    })
    assert.deepEqual(await listAll({ metadata: { tag } }), [])
  })

  it('a template without bash is refused at create, saying so, and nothing is left', async () => {
    const tag = randomUUID().slice(0, 8)
    await assert.rejects(Sandbox.create('nobash', { metadata: { tag } }), err => {
      assert.ok(err instanceof SandboxError, `${err}`)
      assert.match(err.message, /bash/i)
      assert.ok(err.statusCode >= 400 && err.statusCode < 500, `status ${err.statusCode}`)
      return true
    })
    assert.deepEqual(await listAll({ metadata: { tag } }), [])
  })

  it('an unknown template is a 4xx naming it', async () => {
    await assert.rejects(Sandbox.create('no-such-template-' + run), err => {
      assert.ok(err.statusCode >= 400 && err.statusCode < 500, `${err}`)
      assert.match(err.message, /no-such-template/)
      return true
    })
  })

  it('features Hangar does not implement are a clear 400 naming them', async () => {
    const r = await apiFetch('/v2/sandboxes', {
      method: 'POST', body: { templateID: 'base', allow_internet_access: true },
    })
    assert.equal(r.status, 400, r.text)
    assert.equal(r.json.code, 400)
    assert.match(r.json.message, /internet/i)
    const sbx = await t.create()
    const unsupported = [
      ['getMetrics', () => sbx.getMetrics(), /metrics/],
      ['createSnapshot', () => sbx.createSnapshot(), /snapshot/],
      ['fork', () => sbx.fork(), /fork/],
      ['updateNetwork', () => sbx.updateNetwork({ allowOut: ['1.1.1.1'] }), /network/],
    ]
    for (const [name, call, why] of unsupported) {
      await assert.rejects(call(), err => {
        assert.match(err.message, why, `${name}: ${err}`)
        assert.match(err.message, /not/, `${name}: ${err}`)
        return true
      }, name)
    }
    await assert.rejects(Sandbox.create({ mcp: { exa: { apiKey: 'x' } } }), /mcp/i)
    assert.equal(await sbx.isRunning(), true)
  })
})

describe('list, connect, kill', () => {
  it('list filters by metadata and state and pages with nextToken', async () => {
    const tag = randomUUID().slice(0, 8)
    const a = await t.create({ metadata: { tag, n: '1' } })
    const b = await t.create({ metadata: { tag, n: '2' } })
    await t.create({ metadata: { tag: 'other-' + tag } })
    const all = await listAll({ metadata: { tag } })
    assert.deepEqual(all.map(s => s.sandboxId).sort(), [a.sandboxId, b.sandboxId].sort())
    for (const s of all) {
      assert.equal(s.state, 'running')
      assert.equal(s.metadata.tag, tag)
      assert.ok(s.startedAt instanceof Date)
    }
    const one = await listAll({ metadata: { tag, n: '2' } })
    assert.deepEqual(one.map(s => s.sandboxId), [b.sandboxId])
    // Pagination: one per page.
    const p = Sandbox.list({ query: { metadata: { tag } }, limit: 1 })
    const first = await p.nextItems()
    assert.equal(first.length, 1)
    assert.equal(p.hasNext, true)
    assert.ok(p.nextToken)
    const second = await p.nextItems()
    assert.equal(second.length, 1)
    assert.notEqual(second[0].sandboxId, first[0].sandboxId)
    if (p.hasNext) assert.deepEqual(await p.nextItems(), [])
    // State filter: none of them is paused.
    assert.deepEqual(await listAll({ metadata: { tag }, state: ['paused'] }), [])
    assert.equal((await listAll({ metadata: { tag }, state: ['running'] })).length, 2)
  })

  it('connect gives a second handle on the same sandbox', async () => {
    const sbx = await t.create()
    await sbx.files.write('/tmp/from-first', 'one')
    const again = await Sandbox.connect(sbx.sandboxId)
    assert.equal(again.sandboxId, sbx.sandboxId)
    assert.equal(await again.files.read('/tmp/from-first'), 'one')
    const r = await again.commands.run('cat /tmp/from-first')
    assert.equal(r.stdout, 'one')
    const self = await sbx.connect()
    assert.equal(self.sandboxId, sbx.sandboxId)
  })

  it('kill ends it everywhere; a second kill is false; unknown ids are not found', async () => {
    const sbx = await t.create()
    const id = sbx.sandboxId
    assert.equal(await sbx.kill(), true)
    assert.equal(await Sandbox.kill(id), false)
    await assert.rejects(Sandbox.getInfo(id), SandboxNotFoundError)
    await assert.rejects(Sandbox.connect(id), SandboxNotFoundError)
    assert.equal(await sbx.isRunning(), false)
    const ids = (await listAll({})).map(s => s.sandboxId)
    assert.ok(!ids.includes(id))
    const task = await hangarFetch(`/v1/sandboxes/${id}`)
    assert.equal(task.status, 200, task.text)
    assert.notEqual(task.json.state, 'running')
    await assert.rejects(Sandbox.getInfo('nosuchsandbox0000000'), SandboxNotFoundError)
    await assert.rejects(Sandbox.setTimeout('nosuchsandbox0000000', 10_000), SandboxNotFoundError)
    assert.equal(await Sandbox.kill('nosuchsandbox0000000'), false)
  })
})

describe('timeouts', () => {
  it('setTimeout shortens the life of a sandbox: it is gone once it expires', async () => {
    const sbx = await t.create({ timeoutMs: 300_000 })
    await sbx.setTimeout(2_000)
    const info = await sbx.getInfo()
    assert.ok(info.endAt.getTime() - Date.now() < 5_000, `endAt ${info.endAt.toISOString()}`)
    const gone = await waitUntil(async () => {
      try { await Sandbox.getInfo(sbx.sandboxId); return false } catch (e) { return e instanceof SandboxNotFoundError }
    }, 20_000, 250)
    assert.ok(gone, 'still there 20 s after a 2 s timeout')
    assert.equal(await sbx.isRunning(), false)
    const task = await hangarFetch(`/v1/sandboxes/${sbx.sandboxId}`)
    assert.equal(task.json?.state, 'timed_out', task.text)
  })

  it('setTimeout extends the life of a sandbox beyond its create timeout', async () => {
    const sbx = await t.create({ timeoutMs: 3_000 })
    await sbx.setTimeout(60_000)
    await new Promise(r => setTimeout(r, 5_000))
    assert.equal(await sbx.isRunning(), true)
    assert.equal((await sbx.commands.run('echo alive')).stdout, 'alive\n')
  })

  it('refreshes (the REST route the SDK does not wrap) extends the TTL', async () => {
    const sbx = await t.create({ timeoutMs: 10_000 })
    const r = await apiFetch(`/sandboxes/${sbx.sandboxId}/refreshes`, { method: 'POST', body: { duration: 100 } })
    assert.equal(r.status, 204, r.text)
    const info = await sbx.getInfo()
    assert.ok(info.endAt.getTime() - Date.now() > 60_000, `endAt ${info.endAt.toISOString()}`)
  })
})

describe('pause and resume', () => {
  it('pause freezes it; connect resumes it and it keeps its files', async () => {
    const sbx = await t.create({ metadata: { run, p: 'pause' } })
    await sbx.files.write('/tmp/kept', 'still here')
    assert.equal(await sbx.pause(), true)
    assert.equal((await sbx.getInfo()).state, 'paused')
    const paused = await listAll({ metadata: { run, p: 'pause' }, state: ['paused'] })
    assert.deepEqual(paused.map(s => s.sandboxId), [sbx.sandboxId])
    assert.equal(await Sandbox.pause(sbx.sandboxId), false, 'pausing a paused sandbox is false (409)')
    const resumed = await Sandbox.connect(sbx.sandboxId)
    assert.equal((await resumed.getInfo()).state, 'running')
    assert.equal(await resumed.files.read('/tmp/kept'), 'still here')
    assert.equal((await resumed.commands.run('echo back')).stdout, 'back\n')
  })
})

