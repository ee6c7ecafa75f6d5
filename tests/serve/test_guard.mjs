// Every guard path through `opencon serve`, each against `opencon guarded-generate` with the same
// model, probe, classifier and thresholds (the reference): completed; paused at the first reading and
// mid-stream (no classifier); paused then allowed (completed); blocked and uncertain mid-stream;
// blocked and uncertain at the final check. Streamed, the text before the refusal must be exactly what
// the reference released, then "\n\n" and the refusal, finish_reason content_filter; not streamed,
// the refusal alone. Also: guard events against the reference's, observe mode, and thresholds a
// request may only tighten.
//
// One probe serves every path: random weights (risks between 0 and 1 along the answer) with a
// pause threshold of 1 in its config, so it never pauses unless a request asks for a lower one:
// pause_threshold 0 pauses at every reading, and a threshold between two readings of the reference's
// trace pauses mid-stream. The classifier's scores of the reference's calls choose its thresholds the
// same way.
import fs from 'node:fs';
import path from 'node:path';
import { REFUSAL, assert, assertError, guardedGenerate, main, metrics, parseSSE, post, releasedBefore, sdkClient, startServer, step, stopServer, streamChat,
  testContext, writeProbe } from './lib.mjs';

const ctx = testContext();
const PROMPT = 'a'; // a long greedy answer on the tiny gemma (more than 60 tokens)
const MAX = 60;
const ALLOW = '0.999999', BLOCK = '1'; // the servers' classifier thresholds: every score is allowed

// the probe, and a copy of its config with another pause threshold (the reference reads it from the config)
const probeDir = path.join(ctx.work, 'probe');
const probe = writeProbe(probeDir, { modelId: ctx.gemma, hidden: 64, weights: (i) => 0.3 * Math.sin(1.3 * i + 0.5), pause: 1 });
function configWithPause(pause) {
  const c = JSON.parse(fs.readFileSync(path.join(probeDir, 'config.json'), 'utf8'));
  c.pause_threshold = pause;
  const file = path.join(ctx.work, `config-pause-${pause}.json`);
  fs.writeFileSync(file, JSON.stringify(c));
  return file;
}

// the reference run: {released, result, events}
function reference({ pause = 1, classifier = true, allow = ALLOW, block = BLOCK, finalCheck = false, trace = null }) {
  const args = ['--threads', '1', '--model_id', ctx.gemma, '--probe_path', probe, '--config_path', configWithPause(pause), '--prompt', PROMPT,
    '--max_new_tokens', String(MAX)];
  if (classifier) args.push('--classifier_dir', ctx.classifier, '--classifier_allow_threshold', String(allow), '--classifier_block_threshold', String(block));
  if (finalCheck) args.push('--final_classifier_check');
  if (trace) args.push('--trace_path', trace);
  return guardedGenerate(ctx, args);
}

// A threshold between the readings of a series that makes the first k-1 pass and the k-th stop:
// the k whose value is furthest above every earlier one (the largest margin on both sides). t is
// halfway; lo < hi (a quarter and three quarters of the way) for an allow and a block threshold.
function splitPoint(values) {
  let best = null;
  for (let k = 1; k < values.length; k++) {
    const prev = Math.max(...values.slice(0, k)), gap = values[k] - prev;
    if (gap > 0 && (!best || gap > best.gap)) best = { k, gap, t: prev + gap / 2, lo: prev + gap / 4, hi: prev + (3 * gap) / 4 };
  }
  assert.ok(best && best.gap > 1e-3, `no reading stands clearly above the earlier ones: ${values}`);
  return best;
}

// the same request streamed and not; both against the reference
async function compare(port, guard, ref, { expectStatus, events = false }) {
  const body = { messages: [{ role: 'user', content: PROMPT }], temperature: 0, max_tokens: MAX, guard: { ...guard, events } };
  const r = await streamChat(port, body, { headers: {} });
  assert.equal(r.status, 200, r.text);
  const s = parseSSE(r.text);
  const res = ref.result;
  assert.equal(res.status, expectStatus, `the reference's status: ${JSON.stringify(res)}`);
  assert.equal(s.guard.status, expectStatus);
  assert.equal(s.guard.mode, 'enforce');
  for (const k of ['probe_calls', 'classifier_calls', 'stop_reason']) assert.equal(s.guard[k], res[k], `guard.${k}`);
  if (res.classifier_score === null) assert.equal(s.guard.classifier_score, null);
  else assert.ok(Math.abs(s.guard.classifier_score - res.classifier_score) < 1e-6, `classifier_score ${s.guard.classifier_score} vs ${res.classifier_score}`);
  assert.equal(s.guard.classifier_verdict, res.classifier_verdict);
  if (expectStatus === 'completed') {
    assert.equal(s.content, ref.released);
    assert.equal(res.response, ref.released);
    assert.ok(['stop', 'length'].includes(s.finishReason));
  } else {
    assert.equal(s.finishReason, 'content_filter');
    assert.equal(releasedBefore(s.content), ref.released, 'the streamed text is not exactly the cleared prefix');
    assert.equal(s.deltas.at(-1), ref.released ? `\n\n${REFUSAL}` : REFUSAL, 'the refusal is not the last content delta');
  }
  if (events) {
    // the guard's events, in order, as the reference printed them (scores within float noise)
    assert.equal(s.events.length, ref.events.length, `events: ${JSON.stringify(s.events)} vs ${JSON.stringify(ref.events)}`);
    s.events.forEach((e, i) => {
      const f = ref.events[i];
      assert.deepEqual(Object.keys(e).sort(), Object.keys(f).sort());
      for (const k of Object.keys(f)) {
        if (typeof f[k] === 'number' && !Number.isInteger(f[k])) assert.ok(Math.abs(e[k] - f[k]) < 1e-6, `event ${i}.${k}: ${e[k]} vs ${f[k]}`);
        else assert.equal(e[k], f[k], `event ${i}.${k}`);
      }
    });
  } else {
    assert.equal(s.events.length, 0, 'events without asking');
  }
  // not streamed: the refusal alone after a guard stop
  const n = await post(port, '/v1/chat/completions', { ...body, guard });
  assert.equal(n.status, 200, n.text);
  const c = n.json.choices[0];
  assert.equal(n.json.guard.status, expectStatus);
  assert.equal(c.message.content, expectStatus === 'completed' ? ref.released : REFUSAL);
  assert.equal(c.finish_reason, expectStatus === 'completed' ? s.finishReason : 'content_filter');
  assert.equal(n.json.usage.completion_tokens, res.generated_tokens);
  return s;
}

main('serve_guard', async () => {
  const common = ['--model_id', ctx.gemma, '--probe_path', probe, '--ctx_size', '512', '--parallel', '2'];
  const withCls = await startServer(ctx, [...common, '--classifier_dir', ctx.classifier, '--classifier_allow_threshold', ALLOW, '--classifier_block_threshold', BLOCK]);
  const noCls = await startServer(ctx, [...common, '--allow_observe']);
  const final = await startServer(ctx, [...common, '--classifier_dir', ctx.classifier, '--classifier_allow_threshold', ALLOW, '--classifier_block_threshold', BLOCK,
    '--final_classifier_check']);

  // the reference's readings and classifier scores, to choose the thresholds of each path
  const trace = path.join(ctx.work, 'trace.jsonl');
  const full = reference({ classifier: false, trace });
  assert.equal(full.result.status, 'completed');
  assert.equal(full.result.generated_tokens, MAX, 'the reference answer ended early: choose a prompt with a longer answer');
  const readings = fs.readFileSync(trace, 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((l) => 'smoothed_risk' in l);
  const pauseAt = splitPoint(readings.map((l) => l.smoothed_risk));
  const allAllowed = reference({ pause: 0 });
  const scores = allAllowed.events.filter((e) => e.event === 'classifier').map((e) => e.score);
  const blockAt = splitPoint(scores);
  console.log(`   mid-stream pause at reading ${pauseAt.k} (threshold ${pauseAt.t}), classifier stop at call ${blockAt.k} (threshold ${blockAt.t})`);

  await step('completed: nothing pauses, everything is released', async () => {
    await compare(withCls.port, {}, reference({}), { expectStatus: 'completed' });
  });

  await step('paused at the first reading (no classifier): the refusal alone', async () => {
    const s = await compare(noCls.port, { pause_threshold: 0 }, reference({ pause: 0, classifier: false }), { expectStatus: 'paused', events: true });
    assert.equal(s.content, REFUSAL);
  });

  await step('paused mid-stream (no classifier): the cleared prefix, then the refusal', async () => {
    const ref = reference({ pause: pauseAt.t, classifier: false });
    assert.ok(ref.released.length > 0, 'nothing released before the pause');
    const released = readings[pauseAt.k - 1].released_bytes;
    assert.equal(Buffer.byteLength(ref.released), released, 'the reference released more or less than its trace says');
    await compare(noCls.port, { pause_threshold: pauseAt.t }, ref, { expectStatus: 'paused', events: true });
  });

  await step('paused then allowed at every reading: completed, every token released', async () => {
    const s = await compare(withCls.port, { pause_threshold: 0 }, allAllowed, { expectStatus: 'completed', events: true });
    assert.equal(s.content, full.released);
    assert.ok(s.guard.classifier_calls >= 10);
    assert.equal(s.guard.classifier_verdict, 'allow');
  });

  await step('blocked mid-stream: the text the classifier cleared, then the refusal', async () => {
    const { lo, hi } = blockAt;
    const ref = reference({ pause: 0, allow: lo, block: hi });
    assert.ok(ref.released.length > 0, 'nothing released before the block');
    const s = await compare(withCls.port, { pause_threshold: 0, classifier_allow_threshold: lo, classifier_block_threshold: hi }, ref,
      { expectStatus: 'blocked', events: true });
    assert.equal(s.guard.classifier_calls, blockAt.k + 1);
    assert.equal(s.guard.classifier_verdict, 'block');
    assert.ok(full.released.startsWith(ref.released));
  });

  await step('uncertain mid-stream: held text never sent', async () => {
    const t = blockAt.t;
    const ref = reference({ pause: 0, allow: t, block: BLOCK });
    const s = await compare(withCls.port, { pause_threshold: 0, classifier_allow_threshold: t }, ref, { expectStatus: 'uncertain' });
    assert.equal(s.guard.classifier_verdict, 'uncertain');
    assert.ok(releasedBefore(s.content).length < full.released.length);
  });

  await step('uncertain at the first pause: the refusal alone', async () => {
    const s = await compare(withCls.port, { pause_threshold: 0, classifier_allow_threshold: 0 }, reference({ pause: 0, allow: 0, block: BLOCK }),
      { expectStatus: 'uncertain' });
    assert.equal(s.content, REFUSAL);
  });

  await step('blocked by the final check (a probe that never pauses)', async () => {
    const ref = reference({ allow: 0, block: 1e-9, finalCheck: true });
    const s = await compare(final.port, { classifier_allow_threshold: 0, classifier_block_threshold: 1e-9 }, ref, { expectStatus: 'blocked', events: true });
    assert.equal(s.guard.classifier_calls, 1);
    assert.equal(s.guard.probe_calls, full.result.probe_calls);
    assert.ok(s.events.some((e) => e.event === 'final_check' && e.verdict === 'block'));
  });

  await step('uncertain at the final check; allowed by it: completed', async () => {
    await compare(final.port, { classifier_allow_threshold: 0 }, reference({ allow: 0, block: BLOCK, finalCheck: true }), { expectStatus: 'uncertain' });
    const s = await compare(final.port, {}, reference({ finalCheck: true }), { expectStatus: 'completed' });
    assert.equal(s.guard.classifier_calls, 1);
  });

  await step('the SDK reads a guard stop as an ordinary answer (content_filter, no exception), guard fields ride along', async () => {
    const client = sdkClient(ctx, noCls.port);
    const r = await client.chat.completions.create({ model: 'x', messages: [{ role: 'user', content: PROMPT }], temperature: 0, max_tokens: MAX,
      guard: { pause_threshold: 0 } });
    assert.equal(r.choices[0].finish_reason, 'content_filter');
    assert.equal(r.choices[0].message.content, REFUSAL);
    assert.equal(r.guard.status, 'paused');
    const stream = await client.chat.completions.create({ model: 'x', messages: [{ role: 'user', content: PROMPT }], temperature: 0, max_tokens: MAX,
      guard: { pause_threshold: pauseAt.t }, stream: true });
    let content = '', finish = null, guard = null;
    for await (const c of stream) {
      for (const ch of c.choices) { content += ch.delta.content || ''; if (ch.finish_reason) { finish = ch.finish_reason; guard = c.guard; } }
    }
    assert.equal(finish, 'content_filter');
    assert.equal(guard.status, 'paused');
    assert.ok(content.endsWith(REFUSAL));
  });

  await step('observe mode: everything streamed, finish_reason stop/length, guard.status what the guard would have done', async () => {
    const body = { messages: [{ role: 'user', content: PROMPT }], temperature: 0, max_tokens: MAX, guard: { mode: 'observe', pause_threshold: 0 } };
    const s = parseSSE((await streamChat(noCls.port, body)).text);
    assert.equal(s.content, full.released);
    assert.equal(s.finishReason, 'length');
    assert.equal(s.guard.status, 'paused');
    assert.equal(s.guard.mode, 'observe');
    const n = await post(noCls.port, '/v1/chat/completions', body);
    assert.equal(n.json.choices[0].message.content, full.released);
    assert.equal(n.json.choices[0].finish_reason, 'length');
    assert.equal(n.json.guard.status, 'paused');
    // mid-stream too: the text past the pause is sent
    const m = parseSSE((await streamChat(noCls.port, { ...body, guard: { mode: 'observe', pause_threshold: pauseAt.t } })).text);
    assert.equal(m.content, full.released);
    assert.equal(m.guard.status, 'paused');
    // enforce, spelled out, is the default
    const e = await post(noCls.port, '/v1/chat/completions', { ...body, guard: { mode: 'enforce', pause_threshold: 0 } });
    assert.equal(e.json.choices[0].message.content, REFUSAL);
    // not allowed without --allow_observe
    for (const stream of [false, true])
      assertError(await post(withCls.port, '/v1/chat/completions', { ...body, stream }), 400, { type: 'invalid_request_error', message: /observe/ });
  });

  await step('thresholds: a request may only tighten them (400 otherwise, streamed or not), and settings are checked', async () => {
    const body = { messages: [{ role: 'user', content: PROMPT }], temperature: 0, max_tokens: 8 };
    for (const stream of [false, true]) {
      for (const guard of [{ classifier_allow_threshold: 1 }, { classifier_allow_threshold: 0.5, classifier_block_threshold: 0.2 }]) {
        const r = await post(withCls.port, '/v1/chat/completions', { ...body, stream, guard });
        assertError(r, 400, { type: 'invalid_request_error', param: 'guard.classifier_allow_threshold' });
      }
    }
    // the server's own values are allowed
    const same = await post(withCls.port, '/v1/chat/completions', { ...body, guard: { classifier_allow_threshold: Number(ALLOW), classifier_block_threshold: 1, pause_threshold: 1 } });
    assert.equal(same.status, 200, same.text);
    for (const guard of [{ pause_threshold: 2 }, { pause_threshold: '0.5' }, { mode: 'audit' }, { events: 'yes' }, { colour: 1 }, 'strict'])
      assertError(await post(withCls.port, '/v1/chat/completions', { ...body, guard }), 400, { type: 'invalid_request_error' });
  });

  await step('batched: every path at once, decoded in one batch, ends as it ends alone', async () => {
    // the same requests as above, all in flight together on a server with 8 slots: each answer
    // (text, status, counts) must be what it was when it had the engine to itself
    const batched = await startServer(ctx, [...common.slice(0, -2), '--parallel', '8', '--classifier_dir', ctx.classifier, '--classifier_allow_threshold', ALLOW,
      '--classifier_block_threshold', BLOCK]);
    const guards = [{}, { pause_threshold: 0 }, { pause_threshold: pauseAt.t }, { pause_threshold: 0, classifier_allow_threshold: blockAt.lo, classifier_block_threshold: blockAt.hi },
      { pause_threshold: 0, classifier_allow_threshold: blockAt.t }, { pause_threshold: 0, classifier_allow_threshold: 0 }, { pause_threshold: pauseAt.t, events: true },
      { pause_threshold: 0, classifier_allow_threshold: blockAt.lo, classifier_block_threshold: blockAt.hi, events: true }];
    const body = (guard) => ({ messages: [{ role: 'user', content: PROMPT }], temperature: 0, max_tokens: MAX, guard });
    const alone = [];
    for (const g of guards) alone.push(parseSSE((await streamChat(batched.port, body(g))).text));
    for (let round = 0; round < 3; round++) {
      const together = (await Promise.all(guards.map((g) => streamChat(batched.port, body(g))))).map((r) => parseSSE(r.text));
      together.forEach((t, i) => {
        const a = alone[i], what = `request ${i} (${JSON.stringify(guards[i])})`;
        assert.equal(t.content, a.content, what);
        assert.equal(t.finishReason, a.finishReason, what);
        for (const k of ['status', 'probe_calls', 'classifier_calls', 'stop_reason', 'classifier_verdict']) assert.equal(t.guard[k], a.guard[k], `${what}: guard.${k}`);
        assert.equal(t.events.length, a.events.length, what);
      });
    }
    const m = await metrics(batched.port);
    assert.ok(m.opencon_decode_tokens_total > m.opencon_decode_steps_total * 1.5, 'the decode steps were not batched');
    await stopServer(batched);
  });

  await step('moderations on a server without a classifier: 400', async () => {
    assertError(await post(noCls.port, '/v1/moderations', { input: 'x' }), 400, { type: 'invalid_request_error', message: /no exchange classifier/ });
  });

  for (const s of [withCls, noCls, final]) await stopServer(s);
});
