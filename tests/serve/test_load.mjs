// The bounded load test: two rounds of requests from 16 concurrent clients mixing streams (raw SSE,
// strictly parsed, and the SDK's), non-streamed answers, every guard outcome, clients that go away
// (before the answer, mid-stream, while waiting for a whole answer), malformed and wrong bodies,
// moderations and the GET routes. No crash, no 5xx, every stream well formed, every answer
// consistent with its guard status; the server's RSS after the second round within 10 % of after the
// first (no leak), and a clean exit (under ASan: LeakSanitizer finds nothing). In an ASan tree the
// rounds are smaller (80 requests each instead of 300: the sanitizers make every request slower),
// a warm-up round comes first and the quarantine is small (see below).
import http from 'node:http';
import path from 'node:path';
import { REFUSAL, assert, main, metrics, parseSSE, post, readAudit, request, rssKb, sdkClient, sleep, startServer, step, stopServer, streamChat, testContext, waitFor,
  writeProbe } from './lib.mjs';

const ctx = testContext();
const CLIENTS = 16;
const PER_ROUND = ctx.sanitized ? 80 : 300;

// a small deterministic generator: every run makes the same mix
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PROMPTS = ['Hello there', 'a', 'o', 'Tell me a story', 'What is a cat?', 'Write a poem about the sea', 'x', 'Explain SQL injection'];
// guard settings and the statuses they may end in (the probe's config never pauses by itself)
const GUARDS = [
  [undefined, ['completed']],
  [{ pause_threshold: 0 }, ['completed']], // every reading pauses, the server's classifier thresholds allow
  [{ pause_threshold: 0, classifier_allow_threshold: 0, classifier_block_threshold: 1e-9 }, ['blocked']],
  [{ pause_threshold: 0, classifier_allow_threshold: 0 }, ['uncertain']],
  [{ pause_threshold: 0.3, events: true }, ['completed']],
];
const MALFORMED = ['{', '', 'null', '{"messages": "hi"}', '{"messages": [{"role": "user", "content": 1}]}', '{"messages": [{"role": "user", "content": "x"}], "n": 3}',
  '{"messages": [{"role": "user", "content": "x"}], "max_tokens": -4}', '\u0000\u0001garbage', '{"messages": [{"role": "user", "content": "x"}]}}'];

function chatBody(r) {
  const pick = (xs) => xs[Math.floor(r() * xs.length)];
  const [guard, statuses] = pick(GUARDS);
  const body = { messages: [{ role: 'user', content: pick(PROMPTS) }], max_tokens: 1 + Math.floor(r() * 48) };
  if (r() < 0.5) { body.temperature = 0; } else { body.temperature = 1; body.seed = Math.floor(r() * 1000); }
  if (guard) body.guard = guard;
  if (r() < 0.2) body.stop = ['e'];
  return { body, statuses };
}

function checkAnswer(status, finish, content, statuses, what) {
  // an answer that ends before its first token (sampled end of turn) has nothing to read or classify
  const empty = status === 'completed' && content === '';
  assert.ok(statuses.includes(status) || empty, `${what}: guard status ${status}, expected ${statuses}`);
  if (status === 'completed') assert.ok(['stop', 'length'].includes(finish), `${what}: finish_reason ${finish}`);
  else {
    assert.equal(finish, 'content_filter', what);
    assert.ok(content.endsWith(REFUSAL), `${what}: no refusal`);
  }
}

// one request of a random kind; returns its kind and HTTP status
async function one(port, client, r) {
  const x = r();
  if (x < 0.3) { // a raw stream, strictly parsed
    const { body, statuses } = chatBody(r);
    const includeUsage = r() < 0.5;
    if (includeUsage) body.stream_options = { include_usage: true };
    const s = await streamChat(port, body);
    assert.equal(s.status, 200, s.text);
    const p = parseSSE(s.text, { includeUsage });
    checkAnswer(p.guard.status, p.finishReason, p.content, statuses, `stream ${JSON.stringify(body)}`);
    return ['stream', 200];
  }
  if (x < 0.45) { // not streamed
    const { body, statuses } = chatBody(r);
    const n = await post(port, '/v1/chat/completions', body);
    assert.equal(n.status, 200, n.text);
    assert.equal(n.json.object, 'chat.completion');
    const c = n.json.choices[0];
    checkAnswer(n.json.guard.status, c.finish_reason, c.message.content, statuses, `chat ${JSON.stringify(body)}`);
    return ['chat', 200];
  }
  if (x < 0.55) { // the SDK, streamed or not
    const { body, statuses } = chatBody(r);
    if (r() < 0.5) {
      const c = await client.chat.completions.create({ model: 'm', ...body });
      checkAnswer(c.guard.status, c.choices[0].finish_reason, c.choices[0].message.content, statuses, 'sdk');
    } else {
      let content = '', finish = null, guard = null;
      for await (const chunk of await client.chat.completions.create({ model: 'm', ...body, stream: true }))
        for (const ch of chunk.choices) { content += ch.delta.content || ''; if (ch.finish_reason) { finish = ch.finish_reason; guard = chunk.guard; } }
      checkAnswer(guard.status, finish, content, statuses, 'sdk stream');
    }
    return ['sdk', 200];
  }
  if (x < 0.72) { // a client that goes away: at once, mid-stream, or while waiting for a whole answer
    const { body } = chatBody(r);
    body.max_tokens = 200;
    const y = r();
    if (y < 0.7) {
      const s = streamChat(port, body, { until: y < 0.35 ? () => true : (st) => st.firstContentMs !== null });
      const st = await s.catch((e) => ({ error: e }));
      if (st.status !== undefined && st.status !== null) assert.equal(st.status, 200);
      return ['disconnect', 200];
    }
    await new Promise((resolve) => {
      const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/v1/chat/completions', agent: false, headers: { 'Content-Type': 'application/json' } },
        (res) => { res.resume(); res.on('end', resolve); res.on('error', resolve); });
      req.on('error', resolve);
      req.end(JSON.stringify(body));
      setTimeout(() => { req.destroy(); resolve(); }, 1 + Math.floor(r() * 20));
    });
    return ['disconnect', 200];
  }
  if (x < 0.87) { // malformed or wrong bodies
    const bad = MALFORMED[Math.floor(r() * MALFORMED.length)];
    const res = await post(port, r() < 0.5 ? '/v1/chat/completions' : '/v1/moderations', bad);
    assert.equal(res.status, 400, `${JSON.stringify(bad)}: ${res.status} ${res.text}`);
    assert.equal(typeof res.json.error.message, 'string');
    return ['malformed', 400];
  }
  if (x < 0.94) {
    const m = await post(port, '/v1/moderations', { input: [PROMPTS[Math.floor(r() * PROMPTS.length)], { prompt: 'p', response: 'r' }] });
    assert.equal(m.status, 200, m.text);
    assert.equal(m.json.results.length, 2);
    return ['moderation', 200];
  }
  const route = ['/health', '/metrics', '/v1/models'][Math.floor(r() * 3)];
  const g = await request(port, 'GET', route);
  assert.equal(g.status, 200, `${route}: ${g.text}`);
  return ['get', 200];
}

async function round(port, client, seed) {
  const r = rng(seed);
  const seeds = Array.from({ length: PER_ROUND }, () => Math.floor(r() * 2 ** 32));
  const kinds = {};
  let next = 0;
  const worker = async () => {
    while (next < seeds.length) {
      const i = next++;
      const [kind] = await one(port, client, rng(seeds[i]));
      kinds[kind] = (kinds[kind] || 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: CLIENTS }, worker));
  return kinds;
}

main('serve_load', async () => {
  const probe = writeProbe(path.join(ctx.work, 'probe'), { modelId: ctx.gemma, hidden: 64, weights: (i) => 0.3 * Math.sin(1.3 * i + 0.5), pause: 1 });
  // Under ASan, freed memory waits in a quarantine of 256 MB before it is reused: RSS would grow
  // round after round until the quarantine is full. A small quarantine lets the RSS say what it says
  // in Release (LeakSanitizer still checks every allocation at exit).
  const env = ctx.sanitized ? { ...process.env, ASAN_OPTIONS: [process.env.ASAN_OPTIONS, 'quarantine_size_mb=4'].filter(Boolean).join(':') } : process.env;
  const srv = await startServer(ctx, ['--model_id', ctx.gemma, '--probe_path', probe, '--classifier_dir', ctx.classifier, '--classifier_allow_threshold', '0.999999',
    '--classifier_block_threshold', '1', '--ctx_size', '512', '--parallel', '4', '--queue', '64', '--audit_log', path.join(ctx.work, 'audit.jsonl')], { env });
  const client = sdkClient(ctx, srv.port);
  const base = await metrics(srv.port); // startServer's /health polls may have met a 503 while loading
  const idle = () => waitFor('the server idle', async () => { const m = await metrics(srv.port); return m.opencon_busy_slots === 0 && m.opencon_queue_depth === 0; }, 30000);
  let rss1;

  if (ctx.sanitized) {
    // ASan's allocator keeps per-thread caches and size classes that take longer to settle (and a
    // thread serves each connection): a round to warm it up, then the two rounds compared
    await step(`warm-up round (ASan): ${PER_ROUND} requests from ${CLIENTS} clients`, async () => { await round(srv.port, client, 3); await idle(); });
  }
  await step(`round 1: ${PER_ROUND} requests from ${CLIENTS} clients`, async () => {
    const kinds = await round(srv.port, client, 1);
    console.log(`   ${JSON.stringify(kinds)}`);
    for (const k of ['stream', 'chat', 'sdk', 'disconnect', 'malformed', 'moderation']) assert.ok(kinds[k] > 0, `no ${k} request in the mix`);
    await idle();
    await sleep(200);
    rss1 = rssKb(srv.pid);
  });

  await step(`round 2: the same mix again; RSS within 10 % of after round 1`, async () => {
    await round(srv.port, client, 2);
    await idle();
    await sleep(200);
    const rss2 = rssKb(srv.pid);
    console.log(`   RSS after round 1: ${rss1} kB, after round 2: ${rss2} kB`);
    assert.ok(rss2 <= rss1 * 1.1, `RSS grew from ${rss1} kB to ${rss2} kB`);
  });

  await step('the counters: no 5xx, every slot free, the server still answers', async () => {
    const m = await metrics(srv.port);
    const failed = readAudit(path.join(ctx.work, 'audit.jsonl')).filter((l) => l.status >= 500);
    assert.deepEqual(failed, [], 'requests that failed');
    const d = (k) => m[k] - base[k];
    for (const st of ['500', '503', 'other']) assert.equal(d(`opencon_requests_total{status="${st}"}`), 0, `requests with status ${st}`);
    assert.ok(d('opencon_requests_total{status="200"}') > PER_ROUND);
    assert.ok(m['opencon_requests_total{status="400"}'] > 0);
    assert.ok(m['opencon_guard_outcomes_total{status="blocked"}'] > 0 && m['opencon_guard_outcomes_total{status="uncertain"}'] > 0);
    const r = await post(srv.port, '/v1/chat/completions', { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 3 });
    assert.equal(r.status, 200);
  });

  await stopServer(srv);
});
