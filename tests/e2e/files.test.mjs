// sandbox.files through the stock SDK: write (multipart, octet-stream, gzip, several files),
// read (text, bytes, stream), binary and 10 MiB files, list, makeDir, rename, remove, exists,
// getInfo, watchDir, signed upload/download URLs, and paths that try to leave the sandbox.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { createHash, randomBytes, randomUUID } from 'node:crypto'
import { FileType, FilesystemEventType, NotFoundError, FileNotFoundError } from 'e2b'
import { Tracker, sandboxFetch, waitUntil } from './lib.mjs'

const t = new Tracker()
let sbx
before(async () => { sbx = await t.create({ metadata: { suite: 'files' }, timeoutMs: 300_000 }) })
after(() => t.killAll())

const sha = b => createHash('sha256').update(b).digest('hex')

describe('files', () => {
  it('write then read text; the WriteInfo names the file', async () => {
    const info = await sbx.files.write('/tmp/hello.txt', 'hello, sandbox\n')
    assert.equal(info.path, '/tmp/hello.txt')
    assert.equal(info.name, 'hello.txt')
    assert.equal(await sbx.files.read('/tmp/hello.txt'), 'hello, sandbox\n')
    // Relative paths are relative to the user's home.
    await sbx.files.write('rel.txt', 'r')
    assert.equal((await sbx.commands.run('cat /home/user/rel.txt')).stdout, 'r')
    const owner = (await sbx.files.getInfo('rel.txt')).owner
    assert.equal(owner, 'user')
  })

  it('binary data round-trips byte for byte (all 256 values)', async () => {
    const bytes = new Uint8Array(256 * 64).map((_, i) => i % 256)
    await sbx.files.write('/tmp/bin.dat', bytes.buffer)
    const back = await sbx.files.read('/tmp/bin.dat', { format: 'bytes' })
    assert.ok(back instanceof Uint8Array)
    assert.equal(Buffer.compare(Buffer.from(back), Buffer.from(bytes)), 0)
    const blob = await sbx.files.read('/tmp/bin.dat', { format: 'blob' })
    assert.equal(blob.size, bytes.length)
    const stream = await sbx.files.read('/tmp/bin.dat', { format: 'stream' })
    const chunks = []
    for await (const c of stream) chunks.push(Buffer.from(c))
    assert.equal(Buffer.compare(Buffer.concat(chunks), Buffer.from(bytes)), 0)
  })

  it('a 10 MiB file both ways (multipart and octet-stream, gzip read)', async () => {
    const big = randomBytes(10 << 20)
    await sbx.files.write('/tmp/big.bin', new Blob([big]))
    const back = await sbx.files.read('/tmp/big.bin', { format: 'bytes' })
    assert.equal(back.length, big.length)
    assert.equal(sha(back), sha(big))
    const r = await sbx.commands.run('wc -c < /tmp/big.bin')
    assert.equal(r.stdout.trim(), String(big.length))
    await sbx.files.write('/tmp/big2.bin', big, { useOctetStream: true })
    const gz = await sbx.files.read('/tmp/big2.bin', { format: 'bytes', gzip: true })
    assert.equal(sha(gz), sha(big))
  })

  it('several files in one write', async () => {
    const infos = await sbx.files.write([
      { path: '/tmp/multi/a.txt', data: 'A' },
      { path: '/tmp/multi/b.txt', data: 'B' },
    ])
    assert.deepEqual(infos.map(i => i.path).sort(), ['/tmp/multi/a.txt', '/tmp/multi/b.txt'])
    assert.equal(await sbx.files.read('/tmp/multi/b.txt'), 'B')
  })

  it('makeDir, list (depth), getInfo, exists', async () => {
    assert.equal(await sbx.files.makeDir('/tmp/tree/a/b'), true)
    assert.equal(await sbx.files.makeDir('/tmp/tree/a/b'), false, 'exists already')
    await sbx.files.write('/tmp/tree/top.txt', '12345')
    await sbx.files.write('/tmp/tree/a/b/deep.txt', 'x')
    const one = await sbx.files.list('/tmp/tree')
    assert.deepEqual(one.map(e => e.name).sort(), ['a', 'top.txt'])
    const top = one.find(e => e.name === 'top.txt')
    assert.equal(top.type, FileType.FILE)
    assert.equal(top.size, 5)
    assert.equal(top.path, '/tmp/tree/top.txt')
    assert.equal(one.find(e => e.name === 'a').type, FileType.DIR)
    const deep = await sbx.files.list('/tmp/tree', { depth: 3 })
    assert.ok(deep.some(e => e.path === '/tmp/tree/a/b/deep.txt'), JSON.stringify(deep.map(e => e.path)))
    const info = await sbx.files.getInfo('/tmp/tree/top.txt')
    assert.equal(info.size, 5)
    assert.equal(info.type, FileType.FILE)
    assert.ok(info.modifiedTime instanceof Date)
    assert.match(info.permissions, /^-rw/)
    assert.equal(await sbx.files.exists('/tmp/tree/top.txt'), true)
    assert.equal(await sbx.files.exists('/tmp/tree/none.txt'), false)
    await assert.rejects(sbx.files.getInfo('/tmp/tree/none.txt'), NotFoundError)
    await assert.rejects(sbx.files.list('/tmp/tree/none'), NotFoundError)
  })

  it('rename and remove', async () => {
    await sbx.files.write('/tmp/mv/src.txt', 'moving')
    const moved = await sbx.files.rename('/tmp/mv/src.txt', '/tmp/mv/dst.txt')
    assert.equal(moved.path, '/tmp/mv/dst.txt')
    assert.equal(await sbx.files.exists('/tmp/mv/src.txt'), false)
    assert.equal(await sbx.files.read('/tmp/mv/dst.txt'), 'moving')
    await sbx.files.remove('/tmp/mv/dst.txt')
    assert.equal(await sbx.files.exists('/tmp/mv/dst.txt'), false)
    await sbx.files.remove('/tmp/mv')
    assert.equal(await sbx.files.exists('/tmp/mv'), false)
    await assert.rejects(sbx.files.read('/tmp/mv/dst.txt'), FileNotFoundError)
  })

  it('watchDir reports create, write, rename and remove', async () => {
    await sbx.files.makeDir('/tmp/watched')
    const events = []
    const w = await sbx.files.watchDir('/tmp/watched', e => { events.push(e) })
    await sbx.files.write('/tmp/watched/new.txt', 'n')
    await sbx.files.rename('/tmp/watched/new.txt', '/tmp/watched/renamed.txt')
    await sbx.files.remove('/tmp/watched/renamed.txt')
    const all = await waitUntil(() =>
      events.some(e => e.type === FilesystemEventType.REMOVE && e.name === 'renamed.txt'), 5_000, 50)
    await w.stop()
    assert.ok(all, JSON.stringify(events))
    const has = (type, name) => events.some(e => e.type === type && e.name === name)
    assert.ok(has(FilesystemEventType.CREATE, 'new.txt'), JSON.stringify(events))
    assert.ok(has(FilesystemEventType.WRITE, 'new.txt'), JSON.stringify(events))
    assert.ok(has(FilesystemEventType.RENAME, 'new.txt') || has(FilesystemEventType.CREATE, 'renamed.txt'),
      JSON.stringify(events))
    // After stop, no more events.
    const n = events.length
    await sbx.files.write('/tmp/watched/after.txt', 'a')
    await new Promise(r => setTimeout(r, 300))
    assert.equal(events.length, n)
    await assert.rejects(sbx.files.watchDir('/tmp/not-there', () => {}), NotFoundError)
  })

  it('signed download and upload URLs work without the access token header', async () => {
    await sbx.files.write('/tmp/signed.txt', 'signed content')
    const down = await sbx.downloadUrl('/tmp/signed.txt')
    assert.match(down, /signature=v1_/)
    const headers = { 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': '49983' }
    const r = await fetch(down, { headers })
    assert.equal(r.status, 200)
    assert.equal(await r.text(), 'signed content')
    // The signature is for reading this path only.
    const other = new URL(down)
    other.searchParams.set('path', '/tmp/hello.txt')
    assert.equal((await fetch(other, { headers })).status, 401)
    const up = await sbx.uploadUrl('/tmp/uploaded.txt')
    const form = new FormData()
    form.append('file', new Blob(['via url']), 'uploaded.txt')
    const u = await fetch(up, { method: 'POST', headers, body: form })
    assert.equal(u.status, 200, await u.text())
    assert.equal(await sbx.files.read('/tmp/uploaded.txt'), 'via url')
    // A read signature does not allow a write.
    const wrong = new URL(down)
    const w2 = await fetch(wrong, { method: 'POST', headers, body: form })
    assert.equal(w2.status, 401)
  })
})

describe('paths that try to leave the sandbox', () => {
  it('../ in /files stays inside the sandbox root', async () => {
    const name = `hangar-e2e-escape-${randomUUID().slice(0, 8)}`
    const escaping = `/tmp/../../../../../../tmp/${name}`
    const info = await sbx.files.write(escaping, 'inside')
    assert.equal(info.path, `/tmp/${name}`)
    assert.equal((await sbx.commands.run(`cat /tmp/${name}`)).stdout, 'inside')
    assert.equal(fs.existsSync(`/tmp/${name}`), false, 'written on the host')
    const dataDir = process.env.HANGAR_DATA_DIR
    if (dataDir) assert.equal(fs.existsSync(path.join(path.dirname(dataDir), 'tmp', name)), false)
    // Reading ../../etc/passwd gives the sandbox's accounts, not the host's.
    const passwd = await sbx.files.read('../../../../../etc/passwd')
    assert.equal(passwd, (await sbx.commands.run('cat /etc/passwd')).stdout)
    assert.notEqual(passwd, fs.readFileSync('/etc/passwd', 'utf8'))
    const raw = await sandboxFetch('/files?path=' + encodeURIComponent('/../../../../etc/passwd'), {
      sandboxId: sbx.sandboxId, token: sbx.envdAccessToken,
    })
    assert.equal(raw.status, 200)
    assert.equal(raw.raw.toString(), passwd)
  })

  it('a symlink to / inside the sandbox does not reach the host', async () => {
    await sbx.commands.run('busybox ln -sf / /tmp/rootlink')
    const viaLink = await sbx.files.read('/tmp/rootlink/etc/passwd')
    assert.notEqual(viaLink, fs.readFileSync('/etc/passwd', 'utf8'))
    const listing = await sbx.files.list('/tmp/rootlink/')
    assert.ok(!listing.some(e => e.name === 'work'), 'the host root is visible')
  })
})
