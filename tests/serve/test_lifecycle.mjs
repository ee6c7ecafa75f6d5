// `opencon serve` over time, on the slow model (tests/serve/setup.mjs: a few hundred tokens/s, no end
// of sequence, so a generation lasts as long as a test needs): 429 with Retry-After while the only
// slot is busy and the queue is full; a client that goes away (streamed or not) frees its slot at
// once and nothing keeps generating for it; SSE comments keep a held stream alive; /health while
// loading; SIGTERM and SIGINT drain (503 for new requests, the running stream finishes whole, the
// audit log has its line, exit 0) and a drain that runs out of time.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { assert, assertError, loadOpenAI, main, metrics, parseSSE, post, readAudit, request, sdkClient, sleep, startServer, step, stopServer, streamChat,
  testContext, waitFor, writeProbe } from './lib.mjs';

const ctx = testContext();
const LONG = 8000; // tokens: many seconds of the slow model
// A Hub serving one model directory (the layout oc_hub_download reads) whose answers wait for
// release(); with fail set, every model is missing (404).
async function fakeHub(dir) {
  const SHA = '0123456789abcdef0123456789abcdef01234567';
  const hub = { waiting: [], fail: false };
  const answer = (req, res) => {
    const api = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/main$/.exec(req.url);
    const file = /^\/[^/]+\/[^/]+\/resolve\/[0-9a-f]{40}\/([^/]+)$/.exec(req.url);
    if (hub.fail || !(api || file)) { res.writeHead(404); res.end('{}'); return; }
    if (api) {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ id: api[1], sha: SHA, siblings: fs.readdirSync(dir).map((f) => ({ rfilename: f })) }));
      return;
    }
    res.writeHead(200);
    res.end(fs.readFileSync(path.join(dir, file[1])));
  };
  const server = http.createServer((req, res) => {
    if (req.url.startsWith('/api/')) hub.waiting.push(() => answer(req, res));
    else answer(req, res);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  hub.port = server.address().port;
  hub.release = () => { for (const f of hub.waiting.splice(0)) f(); };
  hub.close = () => server.close();
  return hub;
}

const chat = (content, extra = {}) => ({ messages: [{ role: 'user', content }], temperature: 0, ...extra });

main('serve_lifecycle', async () => {
  const never = writeProbe(path.join(ctx.work, 'never'), { modelId: ctx.slow, hidden: 640, bias: -10, layer: -2 });
  const slow = ['--model_id', ctx.slow, '--probe_path', never, '--ctx_size', '8200'];
  const auditA = path.join(ctx.work, 'audit-a.jsonl');
  const a = await startServer(ctx, [...slow, '--parallel', '1', '--queue', '0', '--audit_log', auditA]);
  const OpenAI = loadOpenAI(ctx);

  await step('429 with Retry-After while the only slot is busy (--parallel 1 --queue 0); the SDK raises RateLimitError', async () => {
    const long = streamChat(a.port, chat('Hello there', { max_tokens: LONG }));
    await waitFor('the first content of the long stream', () => long.state.firstContentMs !== null);
    for (const stream of [false, true]) {
      const r = await post(a.port, '/v1/chat/completions', chat('Hi', { max_tokens: 2, stream }));
      assertError(r, 429, { type: 'rate_limit_error', code: 'rate_limit_exceeded' });
      assert.equal(r.headers['retry-after'], '1');
    }
    await assert.rejects(sdkClient(ctx, a.port).chat.completions.create({ model: 'x', ...chat('Hi', { max_tokens: 2 }) }), (e) => {
      assert.ok(e instanceof OpenAI.RateLimitError, `${e}`);
      return true;
    });
    const m = await metrics(a.port);
    assert.equal(m.opencon_busy_slots, 1);
    assert.equal(m['opencon_requests_total{status="429"}'], 3);
    a.long = long;
  });

  // after a client went away: its slot is free within a step, the engine stops decoding for it, and
  // the next request starts at once
  async function slotFreed(what) {
    const t0 = Date.now();
    const freed = await waitFor(`${what}: busy_slots back to 0`, async () => (await metrics(a.port)).opencon_busy_slots === 0, 5000, 5);
    assert.ok(freed < 1000, `${what}: the slot was busy for ${freed} ms more`);
    const d0 = (await metrics(a.port)).opencon_decode_tokens_total;
    await sleep(300);
    const d1 = (await metrics(a.port)).opencon_decode_tokens_total;
    assert.equal(d1, d0, `${what}: the engine kept decoding (${d1 - d0} tokens in 300 ms)`);
    const t1 = Date.now();
    const r = await post(a.port, '/v1/chat/completions', chat('Hi', { max_tokens: 3 }));
    assert.equal(r.status, 200, r.text);
    assert.ok(Date.now() - t1 < 1000, `${what}: the next request took ${Date.now() - t1} ms`);
    // the engine frees a slot just after its answer went out (serve_sequential): wait for it
    await waitFor(`${what}: the short request's slot free`, async () => (await metrics(a.port)).opencon_busy_slots === 0, 2000, 2);
    return Date.now() - t0;
  }

  await step('a streaming client that disconnects frees its slot at once; nothing keeps generating for it', async () => {
    const before = (await metrics(a.port)).opencon_decode_tokens_total;
    await sleep(200);
    assert.ok((await metrics(a.port)).opencon_decode_tokens_total > before, 'the long stream is not decoding');
    a.long.abort();
    await a.long;
    await slotFreed('streamed');
  });

  await step('a non-streaming client that disconnects frees its slot too', async () => {
    await new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: a.port, method: 'POST', path: '/v1/chat/completions', agent: false,
        headers: { 'Content-Type': 'application/json' } }, (res) => reject(new Error(`an answer (${res.statusCode}) to a request of 8000 tokens`)));
      req.on('error', () => {});
      req.end(JSON.stringify(chat('Hello there', { max_tokens: LONG })));
      waitFor('the slot busy', async () => (await metrics(a.port)).opencon_busy_slots === 1).then(() => sleep(200)).then(() => { req.destroy(); resolve(); }, reject);
    });
    await slotFreed('not streamed');
  });

  await stopServer(a);

  await step('the audit log: a 499 line for each client that went away, one line per request', async () => {
    const lines = readAudit(auditA);
    assert.deepEqual(lines.map((l) => l.status), [429, 429, 429, 499, 200, 499, 200]);
    for (const l of lines.filter((x) => x.status === 499)) {
      assert.equal(l.route, '/v1/chat/completions');
      assert.match(l.error, /went away/);
    }
    for (const l of lines.filter((x) => x.status === 429)) assert.match(l.error, /queue is full/);
  });

  await step('a long prompt read in chunks between a running stream\'s decode steps answers as it does read whole', async () => {
    const p = await startServer(ctx, [...slow, '--parallel', '2', '--prefill_chunk', '16']);
    const prompt = Array.from({ length: 120 }, (_, i) => `w${i}`).join(' ');
    const body = chat(prompt, { max_tokens: 24 });
    const neighbour = streamChat(p.port, chat('Hello there', { max_tokens: LONG }));
    await waitFor('the neighbour decoding', () => neighbour.state.firstContentMs !== null);
    // the engine reads a prompt in --prefill_chunk pieces while another slot decodes (serve.h)
    const chunked = await post(p.port, '/v1/chat/completions', body);
    assert.equal(chunked.status, 200, chunked.text);
    assert.ok(chunked.json.usage.prompt_tokens > 100);
    assert.equal(neighbour.state.ended, false, 'the neighbour stream ended before the chunked prompt was read');
    neighbour.abort();
    await neighbour;
    await waitFor('idle', async () => (await metrics(p.port)).opencon_busy_slots === 0);
    const whole = await post(p.port, '/v1/chat/completions', body);
    assert.equal(chunked.json.choices[0].message.content, whole.json.choices[0].message.content);
    assert.equal(chunked.json.usage.completion_tokens, 24);
    await stopServer(p);
  });

  await step('while text is held, SSE comments keep the stream alive (none of the held text is sent)', async () => {
    // a probe read every 4096 tokens: the first 4096 tokens are held for many seconds
    const rare = writeProbe(path.join(ctx.work, 'rare'), { modelId: ctx.slow, hidden: 640, bias: -10, layer: -2, every: 4096 });
    const b = await startServer(ctx, ['--model_id', ctx.slow, '--probe_path', rare, '--ctx_size', '8200', '--parallel', '1']);
    const s = await streamChat(b.port, chat('Hello there', { max_tokens: LONG }), { until: (st) => st.comments > 0 || st.firstContentMs !== null });
    const ms = Date.now() - s.t0;
    assert.equal(s.firstContentMs, null, 'held text was sent (or the model is too fast on this machine to hold 2 s)');
    assert.ok(s.comments > 0);
    assert.ok(ms >= 1800 && ms < 6000, `the first comment came after ${ms} ms (every 2 s expected)`);
    assert.match(s.text, /\n\n: [^\n]*\n\n$/, 'the comment is not an SSE comment line of its own');
    await waitFor('the held stream\'s slot freed', async () => (await metrics(b.port)).opencon_busy_slots === 0, 2000);
    await stopServer(b);
  });

  await step('/health is 503 "loading" until the guard is loaded, then 200; requests meanwhile get 503', async () => {
    // the model comes from a Hub (HF_ENDPOINT) that answers only when the test lets it: loading lasts
    // as long as the test needs
    const hub = await fakeHub(ctx.gemma);
    const repo = 'org/tiny-chat';
    const probe = writeProbe(path.join(ctx.work, 'hub-probe'), { modelId: repo, hidden: 64, bias: -10 });
    const env = { ...process.env, HF_ENDPOINT: `http://127.0.0.1:${hub.port}`, HF_HUB_CACHE: path.join(ctx.work, 'hub-cache'), HF_TOKEN: '' };
    delete env.HF_HUB_OFFLINE;
    const c = await startServer(ctx, ['--model_id', repo, '--probe_path', probe, '--ctx_size', '256'], { waitReady: false, env });
    await waitFor('the server asking the Hub', () => hub.waiting.length > 0);
    const h = await request(c.port, 'GET', '/health');
    assert.equal(h.status, 503);
    assert.deepEqual(h.json, { status: 'loading' });
    assert.equal(h.headers['retry-after'], '1');
    assertError(await post(c.port, '/v1/chat/completions', chat('Hi', { max_tokens: 2 })), 503, { type: 'unavailable_error', message: /loading/ });
    assertError(await post(c.port, '/v1/chat/completions', chat('Hi', { max_tokens: 2, stream: true })), 503);
    assertError(await request(c.port, 'GET', '/v1/models'), 503);
    assertError(await post(c.port, '/tokenize', { content: 'x' }), 503);
    await assert.rejects(sdkClient(ctx, c.port).chat.completions.create({ model: 'x', ...chat('Hi') }), (e) => e instanceof OpenAI.InternalServerError && e.status === 503);
    assert.equal((await request(c.port, 'GET', '/metrics')).status, 200);
    hub.release();
    await waitFor('/health 200', async () => (await request(c.port, 'GET', '/health')).status === 200, 30000);
    const r = await post(c.port, '/v1/chat/completions', chat('Hi', { max_tokens: 3 }));
    assert.equal(r.status, 200, r.text);
    await stopServer(c);
    // a model that cannot be loaded: /health says why while the server stops with an error
    hub.fail = true;
    const missing = writeProbe(path.join(ctx.work, 'hub-missing'), { modelId: 'org/missing', hidden: 64, bias: -10 });
    const f = await startServer(ctx, ['--model_id', 'org/missing', '--probe_path', missing], { waitReady: false, env });
    await waitFor('the server asking the Hub', () => hub.waiting.length > 0);
    hub.release();
    await stopServer(f, { signal: null, expectCode: 1 });
    assert.match(f.stderr, /error: .*org\/missing.*404/);
    hub.close();
  });

  await step('SIGTERM: new requests get 503, the running stream finishes whole, the audit log has its line, exit 0', async () => {
    const audit = path.join(ctx.work, 'audit-drain.jsonl');
    const d = await startServer(ctx, [...slow, '--parallel', '2', '--audit_log', audit]);
    const running = streamChat(d.port, chat('Hello there', { max_tokens: 300, stream_options: { include_usage: true } }));
    await waitFor('the first content', () => running.state.firstContentMs !== null);
    d.proc.kill('SIGTERM');
    await waitFor('draining', async () => (await request(d.port, 'GET', '/health')).status === 503, 2000, 5);
    const h = await request(d.port, 'GET', '/health');
    assert.deepEqual(h.json, { status: 'draining' });
    assertError(await post(d.port, '/v1/chat/completions', chat('Hi', { max_tokens: 2 })), 503, { type: 'unavailable_error' });
    assertError(await post(d.port, '/v1/chat/completions', chat('Hi', { max_tokens: 2, stream: true })), 503);
    assertError(await post(d.port, '/v1/moderations', { input: 'x' }), 503);
    const done = await running;
    assert.ok(!done.aborted);
    const s = parseSSE(done.text, { includeUsage: true });
    assert.equal(s.finishReason, 'length');
    assert.equal(s.usage.completion_tokens, 300);
    const t0 = Date.now();
    await stopServer(d);
    assert.ok(Date.now() - t0 < 3000, 'the server did not exit soon after its last stream');
    const lines = readAudit(audit);
    assert.deepEqual(lines.map((l) => [l.route, l.status]), [['/v1/chat/completions', 503], ['/v1/chat/completions', 503], ['/v1/moderations', 503],
      ['/v1/chat/completions', 200]]);
    assert.equal(lines[3].request_id, s.chunks[0].id);
    assert.equal(lines[3].completion_tokens, 300);
    assert.equal(lines[3].finish_reason, 'length');
  });

  await step('SIGINT with --drain_s 0.5: a stream longer than the drain is cut, the server exits 0 soon', async () => {
    const audit = path.join(ctx.work, 'audit-cut.jsonl');
    const d = await startServer(ctx, [...slow, '--parallel', '1', '--drain_s', '0.5', '--audit_log', audit]);
    const running = streamChat(d.port, chat('Hello there', { max_tokens: LONG }));
    const outcome = running.then((r) => r, (error) => ({ error }));
    await waitFor('the first content', () => running.state.firstContentMs !== null);
    const t0 = Date.now();
    d.proc.kill('SIGINT');
    await stopServer(d, { signal: null });
    const took = Date.now() - t0;
    assert.ok(took < 3000, `exit ${took} ms after SIGINT with --drain_s 0.5`);
    const r = await outcome;
    assert.ok(r.error || !r.text.endsWith('data: [DONE]\n\n'), 'a stream of 8000 tokens finished within a drain of 0.5 s');
    const lines = readAudit(audit);
    assert.equal(lines.length, 1);
    assert.equal(lines[0].status, 503);
    assert.match(lines[0].error, /server stopped/);
  });
});
