// Shared by the *.test.mjs files: the environment the driver (e2b_sdk_test.cc) sets, a sandbox
// tracker that kills whatever a test made, and raw-HTTP helpers for the bad-input checks that
// the SDK cannot express (missing tokens, malformed Connect frames).
//
// Environment: E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY (team A), E2B_API_KEY_2 (team B),
// HANGAR_URL (the same daemon's /v1 API), HANGAR_NODE_TOKEN (its node API).
import assert from 'node:assert/strict'
import { Sandbox } from 'e2b'

export function need(name) {
  const v = process.env[name]
  assert.ok(v, `${name} is not set: run this suite through e2b_sdk_e2e_test (see tests/e2e/README.md)`)
  return v
}

export const env = {
  apiUrl: need('E2B_API_URL'),
  sandboxUrl: need('E2B_SANDBOX_URL'),
  keyA: need('E2B_API_KEY'),
  keyB: need('E2B_API_KEY_2'),
  hangarUrl: process.env.HANGAR_URL || need('E2B_API_URL'),
  nodeToken: process.env.HANGAR_NODE_TOKEN || '',
}

// Options that make the SDK talk to team B instead of the environment's team A.
export const teamB = { apiKey: env.keyB }

// Every sandbox a file creates goes through here; `killAll` (in an `after` hook) removes them.
export class Tracker {
  constructor() { this.ids = new Set() }
  async create(templateOrOpts, opts) {
    const sbx = await Sandbox.create(templateOrOpts, opts)
    this.ids.add({ id: sbx.sandboxId, apiKey: (typeof templateOrOpts === 'object' ? templateOrOpts : opts)?.apiKey })
    return sbx
  }
  async killAll() {
    for (const { id, apiKey } of this.ids) {
      await Sandbox.kill(id, apiKey ? { apiKey } : undefined).catch(() => {})
    }
    this.ids.clear()
  }
}

// A raw call to the traffic endpoint (E2B_SANDBOX_URL) as the SDK would make it.
export async function sandboxFetch(path, { sandboxId, token, method = 'GET', headers = {}, body, port = 49983 } = {}) {
  const h = { ...headers }
  if (sandboxId !== undefined) {
    h['E2b-Sandbox-Id'] = sandboxId
    h['E2b-Sandbox-Port'] = String(port)
  }
  if (token !== undefined) h['X-Access-Token'] = token
  const res = await fetch(new URL(path, env.sandboxUrl), { method, headers: h, body })
  const raw = Buffer.from(await res.arrayBuffer())
  let json = null
  try { json = JSON.parse(raw.toString('utf8')) } catch { /* not JSON */ }
  return { status: res.status, headers: res.headers, raw, json }
}

// A raw call to the lifecycle API (E2B_API_URL).
export async function apiFetch(path, { key = env.keyA, method = 'GET', body, headers = {} } = {}) {
  const h = { ...headers }
  if (key !== null) h['X-API-Key'] = key
  if (body !== undefined) h['Content-Type'] = 'application/json'
  const res = await fetch(new URL(path, env.apiUrl), {
    method, headers: h, body: body === undefined ? undefined : JSON.stringify(body),
  })
  const text = await res.text()
  let json = null
  try { json = JSON.parse(text) } catch { /* not JSON */ }
  return { status: res.status, headers: res.headers, text, json }
}

// A call to Hangar's own /v1 API with a team key (Bearer).
export async function hangarFetch(path, key = env.keyA) {
  const res = await fetch(new URL(path, env.hangarUrl), { headers: { Authorization: `Bearer ${key}` } })
  const text = await res.text()
  let json = null
  try { json = JSON.parse(text) } catch { /* not JSON */ }
  return { status: res.status, json, text }
}

// Connect's envelope: [flags][uint32 BE length][message].
export function connectFrame(obj, flags = 0) {
  const msg = Buffer.from(typeof obj === 'string' ? obj : JSON.stringify(obj))
  const head = Buffer.alloc(5)
  head.writeUInt8(flags, 0)
  head.writeUInt32BE(msg.length, 1)
  return Buffer.concat([head, msg])
}

export function parseFrames(buf) {
  const out = []
  let at = 0
  while (at + 5 <= buf.length) {
    const flags = buf.readUInt8(at)
    const len = buf.readUInt32BE(at + 1)
    const body = buf.subarray(at + 5, at + 5 + len)
    out.push({ flags, json: JSON.parse(body.toString('utf8') || 'null') })
    at += 5 + len
  }
  return out
}

// The E2B error body of the lifecycle API: {code: <int = HTTP status>, message: <non-empty>}.
export function assertApiError(r, status) {
  assert.equal(r.status, status, `want ${status}, got ${r.status} ${r.text}`)
  assert.ok(r.json && typeof r.json === 'object', `error body is not JSON: ${r.text}`)
  assert.equal(r.json.code, status, `error body code: ${r.text}`)
  assert.equal(typeof r.json.message, 'string')
  assert.ok(r.json.message.length > 0)
}

export const sleep = ms => new Promise(r => setTimeout(r, ms))

export async function waitUntil(pred, limitMs, stepMs = 200) {
  const deadline = Date.now() + limitMs
  for (;;) {
    if (await pred()) return true
    if (Date.now() >= deadline) return false
    await sleep(stepMs)
  }
}
