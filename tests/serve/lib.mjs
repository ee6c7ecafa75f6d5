// What the `opencon serve` tests share: their arguments, servers started and stopped as processes,
// probes written for each guard path, plain HTTP, a strict SSE parser, a Prometheus text parser,
// `opencon guarded-generate` as the reference, and a small step runner. Node built-ins only; the
// OpenAI SDK comes from the build tree (tests/serve/setup.mjs).
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';

export { assert };
export const REFUSAL = "I can't help with that request. I can help with safe, lawful alternatives instead."; // OC_REFUSAL (opencon/guard.h)

// ---- arguments: key=value pairs from tests/CMakeLists.txt ----
// opencon (the CLI), e2e (build/e2e), node (the SDK's directory), slow (the slow model), work (this
// test's scratch directory, emptied here), sanitized (1 in an ASan+UBSan tree); args: all of them
// (a test's own, e.g. chromium=PATH)
export function testContext() {
  const a = {};
  for (const kv of process.argv.slice(2)) {
    const i = kv.indexOf('=');
    if (i < 1) throw new Error(`argument "${kv}" is not key=value`);
    a[kv.slice(0, i)] = kv.slice(i + 1);
  }
  for (const k of ['opencon', 'e2e', 'node', 'slow', 'work']) if (!a[k]) throw new Error(`missing argument ${k}=...`);
  fs.rmSync(a.work, { recursive: true, force: true });
  fs.mkdirSync(a.work, { recursive: true });
  return {
    opencon: a.opencon,
    work: a.work,
    nodeDir: a.node,
    sanitized: a.sanitized === '1',
    gemma: path.join(a.e2e, 'gemma4-tiny-chat'),
    classifier: path.join(a.e2e, 'modernbert-tiny-classifier'),
    slow: a.slow,
    args: a,
  };
}

// the official SDK, resolved from the build tree's node_modules
export function loadOpenAI(ctx) {
  const require = createRequire(path.join(ctx.nodeDir, 'package.json'));
  const mod = require('openai');
  return mod;
}

export function sdkClient(ctx, port, apiKey = 'unused') {
  const { default: OpenAI } = loadOpenAI(ctx);
  return new OpenAI({ apiKey, baseURL: `http://127.0.0.1:${port}/v1`, maxRetries: 0, timeout: 60000 });
}

// ---- probes ----
// A linear probe (probe.safetensors: head.weight F32 [1, H], head.bias F32 [1]) and its config.json.
// weights: a function of the feature index (default 0: the risk is sigmoid(bias) at every reading).
export function writeProbe(dir, { modelId, hidden, bias = 0, weights = () => 0, layer = -4, pause = 0.75, threshold = 0.65, every = 4, window = 4 }) {
  fs.mkdirSync(dir, { recursive: true });
  const data = Buffer.alloc(4 * (hidden + 1));
  for (let i = 0; i < hidden; i++) data.writeFloatLE(weights(i), 4 * i);
  data.writeFloatLE(bias, 4 * hidden);
  const header = {
    'head.weight': { dtype: 'F32', shape: [1, hidden], data_offsets: [0, 4 * hidden] },
    'head.bias': { dtype: 'F32', shape: [1], data_offsets: [4 * hidden, 4 * hidden + 4] },
  };
  let h = JSON.stringify(header);
  h += ' '.repeat((8 - (h.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  const file = path.join(dir, 'probe.safetensors');
  fs.writeFileSync(file, Buffer.concat([len, Buffer.from(h), data]));
  const config = {
    model_id: modelId, layer, hidden_size: hidden, threshold, pause_threshold: pause,
    probe_every_n_tokens: every, smoothing_window: window, use_chat_template: true,
  };
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 1));
  return file;
}

// ---- servers ----
const running = new Set(), started = [];
const SANITIZER_REPORT = /ERROR: (Address|Leak|Thread)Sanitizer|runtime error:|SUMMARY: \w+Sanitizer/;

// `opencon serve ARGS --port 0`: resolves once it listens (and, by default, once /health says ready)
export async function startServer(ctx, args, { waitReady = true, env = process.env } = {}) {
  const threads = args.includes('--threads') ? [] : ['--threads', '1']; // one OpenMP thread: a busy neighbour costs its share, no barrier stalls
  const proc = spawn(ctx.opencon, ['serve', ...threads, ...args, '--port', '0'], { stdio: ['ignore', 'ignore', 'pipe'], env });
  const srv = { proc, pid: proc.pid, stderr: '', exited: null };
  running.add(srv);
  started.push(srv);
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (d) => { srv.stderr += d; });
  srv.exit = new Promise((resolve) => proc.on('exit', (code, signal) => { srv.exited = { code, signal }; running.delete(srv); resolve(srv.exited); }));
  srv.port = await new Promise((resolve, reject) => {
    const check = () => {
      const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(srv.stderr);
      if (m) { proc.stderr.off('data', check); resolve(Number(m[1])); }
    };
    proc.stderr.on('data', check);
    srv.exit.then((e) => reject(new Error(`opencon serve exited (${JSON.stringify(e)}) before listening:\n${srv.stderr}`)));
  });
  if (waitReady) await waitHealthy(srv);
  return srv;
}

export async function waitHealthy(srv, timeoutMs = 60000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const r = await request(srv.port, 'GET', '/health').catch(() => null);
    if (r && r.status === 200) return;
    if (srv.exited) throw new Error(`the server exited while loading:\n${srv.stderr}`);
    if (Date.now() > until) throw new Error(`the server was not ready after ${timeoutMs} ms:\n${srv.stderr}`);
    await sleep(20);
  }
}

// SIGTERM (drain; signal null: one sent already) and the exit: status 0 and no sanitizer report
export async function stopServer(srv, { signal = 'SIGTERM', expectCode = 0 } = {}) {
  if (!srv.exited && signal) srv.proc.kill(signal);
  const e = await srv.exit;
  assert.ok(!SANITIZER_REPORT.test(srv.stderr), `sanitizer report from the server:\n${srv.stderr}`);
  assert.equal(e.code, expectCode, `opencon serve exited with ${JSON.stringify(e)}:\n${srv.stderr}`);
  srv.stopped = true;
  return e;
}

function killAll() {
  for (const s of running) s.proc.kill('SIGKILL');
}

export function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

export function rssKb(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m[1]);
}

// ---- HTTP ----
// one request on a connection of its own: {status, headers, text, json (when the body parses)}
export function request(port, method, urlPath, { body, headers = {}, timeoutMs = 60000 } = {}) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    const h = { ...headers };
    if (data !== undefined && !Object.keys(h).some((k) => k.toLowerCase() === 'content-type')) h['Content-Type'] = 'application/json';
    const req = http.request({ host: '127.0.0.1', port, method, path: urlPath, headers: h, agent: false, timeout: timeoutMs }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => {
        let json;
        try { json = JSON.parse(text); } catch { json = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${urlPath}: no answer in ${timeoutMs} ms`)));
    req.on('error', reject);
    if (data !== undefined) req.write(data);
    req.end();
  });
}

export function post(port, urlPath, body, headers) { return request(port, 'POST', urlPath, { body, headers }); }

// A streamed chat completion read as raw text: a promise of {status, headers, text, aborted,
// firstContentMs}. until(state): called on every piece of the body; true closes the connection there
// (a client that goes away). The promise's abort() closes it at any time, its state is what came so far.
export function streamChat(port, body, { headers = {}, until = null, timeoutMs = 120000 } = {}) {
  let req, pClose = null;
  const st = { status: null, headers: null, text: '', aborted: false, ended: false, t0: Date.now(), firstContentMs: null, comments: 0 };
  const p = new Promise((resolve, reject) => {
    const data = JSON.stringify({ ...body, stream: true });
    const close = () => { if (!st.aborted) { st.aborted = true; req.destroy(); resolve(st); } };
    pClose = close;
    req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/v1/chat/completions', agent: false, timeout: timeoutMs,
      headers: { 'Content-Type': 'application/json', ...headers } }, (res) => {
      st.status = res.statusCode;
      st.headers = res.headers;
      res.setEncoding('utf8');
      res.on('data', (d) => {
        st.text += d;
        if (st.firstContentMs === null && /"content":"[^"]/.test(st.text)) st.firstContentMs = Date.now() - st.t0;
        st.comments = (st.text.match(/^:/gm) || []).length;
        if (until && until(st)) close();
      });
      res.on('end', () => { st.ended = true; if (!st.aborted) resolve(st); });
      res.on('error', (e) => { if (!st.aborted) reject(e); });
    });
    req.on('timeout', () => req.destroy(new Error(`stream: no answer in ${timeoutMs} ms`)));
    req.on('error', (e) => { if (!st.aborted) reject(e); });
    req.write(data);
    req.end();
  });
  p.abort = () => pClose && pClose();
  p.state = st;
  return p;
}

// polls pred() until it is true; the time it took (ms), or an error after timeoutMs
export async function waitFor(what, pred, timeoutMs = 10000, everyMs = 10) {
  const t0 = Date.now();
  for (;;) {
    if (await pred()) return Date.now() - t0;
    if (Date.now() - t0 > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(everyMs);
  }
}

// ---- SSE, strictly ----
// Every event is `data: <json>` or comment lines (`: ...`), each ended by a blank line; chunks are
// chat.completion.chunk objects with one id, created and model; the first delta names the assistant;
// exactly one choice has a finish_reason and no choice follows it; with include_usage every chunk
// has "usage": null but the last, which has the usage and no choices; `data: [DONE]` ends the body.
export function parseSSE(text, { includeUsage = false } = {}) {
  assert.ok(text.endsWith('data: [DONE]\n\n'), `the stream does not end with data: [DONE]:\n${text.slice(-300)}`);
  const blocks = text.slice(0, -2).split('\n\n');
  assert.equal(blocks.pop(), 'data: [DONE]');
  const out = { chunks: [], comments: 0, content: '', finishReason: null, usage: null, guard: null, events: [], deltas: [] };
  let finished = false;
  for (const b of blocks) {
    const lines = b.split('\n');
    if (lines.every((l) => l.startsWith(':'))) { out.comments += lines.length; continue; }
    assert.equal(lines.length, 1, `an SSE event of several lines: ${JSON.stringify(b)}`);
    assert.ok(b.startsWith('data: '), `not a data line: ${JSON.stringify(b)}`);
    const payload = b.slice(6);
    assert.notEqual(payload, '[DONE]', '[DONE] before the end');
    const c = JSON.parse(payload);
    assert.ok(!('error' in c), `an error in the stream: ${payload}`);
    assert.equal(c.object, 'chat.completion.chunk');
    assert.match(c.id, /^chatcmpl-/);
    assert.equal(typeof c.created, 'number');
    assert.equal(typeof c.model, 'string');
    if (out.chunks.length) {
      const f = out.chunks[0];
      assert.equal(c.id, f.id, 'ids differ within a stream');
      assert.equal(c.created, f.created);
      assert.equal(c.model, f.model);
    }
    assert.ok(Array.isArray(c.choices));
    if (includeUsage) assert.ok('usage' in c, `include_usage: a chunk without "usage": ${payload}`);
    else assert.ok(!('usage' in c), `"usage" without include_usage: ${payload}`);
    if (c.usage) {
      assert.ok(includeUsage && finished, 'usage before the finish_reason');
      assert.equal(c.choices.length, 0, 'the usage chunk has choices');
      assert.equal(out.usage, null, 'two usage chunks');
      const u = c.usage;
      for (const k of ['prompt_tokens', 'completion_tokens', 'total_tokens']) assert.ok(Number.isInteger(u[k]) && u[k] >= 0, `usage.${k}`);
      assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);
      out.usage = u;
    } else {
      assert.equal(c.choices.length, 1, `a chunk with ${c.choices.length} choices: ${payload}`);
      assert.ok(!finished, `a chunk after the finish_reason: ${payload}`);
      const ch = c.choices[0];
      assert.equal(ch.index, 0);
      assert.equal(typeof ch.delta, 'object');
      if (out.chunks.length === 0) assert.equal(ch.delta.role, 'assistant', 'the first delta does not name the assistant');
      else assert.ok(!('role' in ch.delta), 'a role after the first delta');
      if ('content' in ch.delta) {
        assert.equal(typeof ch.delta.content, 'string');
        out.content += ch.delta.content;
        if (ch.delta.content) out.deltas.push(ch.delta.content);
      }
      if (c.guard && c.guard.events) {
        assert.deepEqual(ch.delta, {}, 'an events chunk with a delta');
        assert.ok(Array.isArray(c.guard.events) && c.guard.events.length > 0);
        out.events.push(...c.guard.events);
      }
      if (ch.finish_reason !== null) {
        assert.ok(['stop', 'length', 'content_filter'].includes(ch.finish_reason), `finish_reason ${ch.finish_reason}`);
        out.finishReason = ch.finish_reason;
        out.guard = c.guard;
        finished = true;
      }
    }
    out.chunks.push(c);
  }
  assert.ok(finished, 'no finish_reason in the stream');
  if (includeUsage) assert.ok(out.usage, 'include_usage: no usage chunk');
  if (includeUsage) assert.ok(out.chunks.at(-1).usage, 'the usage chunk is not the last');
  return out;
}

// the content streamed before a guard stop's refusal ("\n\n" + refusal after released text)
export function releasedBefore(content) {
  assert.ok(content.endsWith(REFUSAL), `the content does not end with the refusal: ${JSON.stringify(content)}`);
  const before = content.slice(0, -REFUSAL.length);
  if (before === '') return '';
  assert.ok(before.endsWith('\n\n'), 'the refusal after released text does not start a paragraph');
  return before.slice(0, -2);
}

// an OpenAI error object with this status
export function assertError(r, status, { type, code, param, message } = {}) {
  assert.equal(r.status, status, `expected ${status}, got ${r.status}: ${r.text}`);
  assert.ok(r.json && typeof r.json.error === 'object', `not an error object: ${r.text}`);
  const e = r.json.error;
  assert.deepEqual(Object.keys(e).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(typeof e.message, 'string');
  assert.ok(e.message.length > 0);
  if (type !== undefined) assert.equal(e.type, type);
  if (code !== undefined) assert.equal(e.code, code);
  if (param !== undefined) assert.equal(e.param, param);
  if (message !== undefined) assert.match(e.message, message);
  return e;
}

// ---- Prometheus text format, strictly: {samples: {"name{labels}": value}, types: {family: type}} ----
export function parseMetrics(text) {
  assert.ok(text.endsWith('\n'), 'the metrics do not end with a newline');
  const samples = {}, types = {};
  const family = (name) => name.replace(/_(bucket|sum|count)$/, '');
  for (const line of text.slice(0, -1).split('\n')) {
    let m;
    if ((m = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) \S.*$/.exec(line))) continue;
    if ((m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line))) {
      assert.ok(!(m[1] in types), `TYPE ${m[1]} twice`);
      types[m[1]] = m[2];
      continue;
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*)?\})? (-?[0-9.eE+-]+|\+Inf|-Inf|NaN)$/.exec(line);
    assert.ok(m, `not a Prometheus sample line: ${JSON.stringify(line)}`);
    const name = m[1], key = name + (m[2] || '');
    const t = types[name] ?? types[family(name)];
    assert.ok(t, `${name} has no TYPE before it`);
    if (name !== family(name)) assert.equal(t, 'histogram', `${name}: a _bucket/_sum/_count of a ${t}`);
    assert.ok(!(key in samples), `${key} twice`);
    const v = Number(m[3]);
    assert.ok(!Number.isNaN(v) || m[3] === 'NaN', `${key}: ${m[3]}`);
    samples[key] = v;
  }
  return { samples, types };
}

export async function metrics(port, headers) {
  const r = await request(port, 'GET', '/metrics', { headers });
  assert.equal(r.status, 200, r.text);
  assert.match(r.headers['content-type'], /^text\/plain/);
  return parseMetrics(r.text).samples;
}

// ---- the reference: opencon guarded-generate ----
// stdout is the released text, a newline and the result JSON on a line of its own
export function guardedGenerate(ctx, args) {
  const r = spawnSync(ctx.opencon, ['guarded-generate', ...args], { encoding: 'utf8', maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, `guarded-generate failed:\n${r.stderr}`);
  assert.ok(r.stdout.endsWith('\n'));
  const body = r.stdout.slice(0, -1), nl = body.lastIndexOf('\n');
  assert.ok(nl >= 0, `guarded-generate printed no result line:\n${r.stdout}`);
  const events = r.stderr.split('\n').filter((l) => l.startsWith('guard: ')).map((l) => JSON.parse(l.slice(7)));
  return { released: body.slice(0, nl), result: JSON.parse(body.slice(nl + 1)), events };
}

// the audit log: one JSON object per line, every line ended
export function readAudit(file) {
  const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  if (!text) return [];
  assert.ok(text.endsWith('\n'), 'the audit log does not end with a newline');
  return text.slice(0, -1).split('\n').map((l) => {
    const o = JSON.parse(l);
    assert.equal(typeof o, 'object');
    return o;
  });
}

// ---- the step runner: steps in order, the first failure ends the test (servers are killed) ----
export async function main(name, fn) {
  const t0 = Date.now();
  let code = 0;
  try {
    await fn();
    console.log(`${name}: all steps passed in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  } catch (e) {
    console.error(`${name}: FAILED: ${e && e.stack ? e.stack : e}`);
    for (const s of started.filter((x) => !x.stopped))
      console.error(`--- stderr of server ${s.pid} (${s.exited ? `exited: ${JSON.stringify(s.exited)}` : 'running'}):\n${s.stderr.slice(-4000)}`);
    code = 1;
  } finally {
    killAll();
  }
  process.exit(code);
}

export async function step(title, fn) {
  const t0 = Date.now();
  process.stdout.write(`-- ${title}\n`);
  try {
    await fn();
  } catch (e) {
    e.message = `${title}: ${e.message}`;
    throw e;
  }
  process.stdout.write(`   ok (${Date.now() - t0} ms)\n`);
}
