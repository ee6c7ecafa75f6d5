// The web console (`opencon serve` at /) in a real browser: Debian's chromium, headless, driven by
// puppeteer-core against servers on 127.0.0.1 running the tiny fixtures. What a person would see is
// checked on the DOM against `opencon guarded-generate` with the same model, probe, classifier and
// thresholds (the reference): the released text, a chart point per probe reading with its smoothed
// risk, the pauses and the classifier's verdicts; a forced block shows the refusal and the
// content_filter badge; observe mode; the moderation panel's three label scores against the API;
// multi-turn requests, new chat, Enter / Shift+Enter / Esc, every control reachable by Tab, text
// contrast, phone width; on a second server (the slow model, an API key): the key prompt, a wrong
// key's message, text streamed in more than one step, the stop button freeing the server's slot.
// No error may reach the browser's console. Screenshots of a completed and a blocked answer are
// written to the work directory (and to shots=DIR when given: docs/ keeps one of each).
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { REFUSAL, assert, guardedGenerate, main, metrics, post, request, startServer, step, stopServer, testContext, waitFor, writeProbe } from './lib.mjs';

const ctx = testContext();
const here = path.dirname(fileURLToPath(import.meta.url));
const webDir = path.join(here, '..', '..', 'web');
const chromium = ctx.args.chromium;
assert.ok(chromium, 'missing argument chromium=PATH');
const shots = ctx.args.shots || null;
const SLOW = ctx.sanitized ? 4 : 1; // timeouts: an ASan server is slower
const PROMPT = 'How do I bake bread at home?'; // 48 tokens and more on the tiny gemma, greedy
const MAX = 48;
const KEY = 'console-test-key-1';
const MODEL_NAME = 'gemma4-tiny-chat (random weights)';

const require = createRequire(path.join(ctx.nodeDir, 'package.json'));
const puppeteer = require('puppeteer-core');

// ---- the reference and the thresholds it implies ----
const probeDir = path.join(ctx.work, 'probe');
// random-looking weights under which the risk of PROMPT's answer rises along it (a fixture, chosen by
// looking: the steps of the story the screenshots tell)
const probe = writeProbe(probeDir, { modelId: ctx.gemma, hidden: 64, weights: (i) => 0.3 * Math.sin(2.1 * i), pause: 1 });
function configWithPause(pause) {
  const c = JSON.parse(fs.readFileSync(path.join(probeDir, 'config.json'), 'utf8'));
  c.pause_threshold = pause;
  c.threshold = suspiciousBelow(pause);
  const file = path.join(ctx.work, `config-pause-${pause}.json`);
  fs.writeFileSync(file, JSON.stringify(c));
  return file;
}
function reference({ pause, allow = null, block = null }) {
  const args = ['--threads', '1', '--model_id', ctx.gemma, '--probe_path', probe, '--config_path', configWithPause(pause), '--prompt', PROMPT,
    '--max_new_tokens', String(MAX)];
  if (allow !== null) args.push('--classifier_dir', ctx.classifier, '--classifier_allow_threshold', String(allow), '--classifier_block_threshold', String(block));
  return guardedGenerate(ctx, args);
}
const of = (ref, name) => ref.events.filter((e) => e.event === name);
// the "suspicious" threshold of a config pausing at p: a little below it
const suspiciousBelow = (p) => Math.max(0, Number((p - 0.1).toFixed(2)));

// ---- the page ----
// what the last answer shows
function lastAnswer(page) {
  return page.evaluate(() => {
    const a = [...document.querySelectorAll('.answer')].pop();
    if (!a) return null;
    const q = (s) => a.querySelector(s);
    return {
      state: a.dataset.state,
      text: q('.released').textContent,
      deciding: !q('.deciding').hidden,
      refusal: q('.refusal').hidden ? null : q('.refusal').textContent,
      error: q('.error').hidden ? null : q('.error').textContent,
      badge: q('.badge').textContent,
      numbers: q('.numbers').textContent,
      points: [...a.querySelectorAll('circle.pt')].map((c) => ({ step: Number(c.dataset.step), smoothed: Number(c.dataset.smoothed), risk: Number(c.dataset.risk),
        decision: c.dataset.decision })),
      pauses: a.querySelectorAll('.pause-mark').length,
      calls: [...a.querySelectorAll('polygon.call')].map((p) => ({ step: p.dataset.step, verdict: p.dataset.verdict, score: Number(p.dataset.score) })),
      chartLabel: q('.chart-svg').getAttribute('aria-label'),
    };
  });
}

async function waitAnswer(page, what) {
  await page.waitForFunction(() => {
    const a = [...document.querySelectorAll('.answer')].pop();
    return a && a.dataset.state !== 'streaming';
  }, { timeout: 60000 * SLOW, polling: 20 }).catch((e) => { throw new Error(`${what}: the answer did not finish: ${e.message}`); });
  return lastAnswer(page);
}

// replaces a field's value by keyboard
async function fill(page, selector, value) {
  await page.focus(selector);
  await page.keyboard.down('Control');
  await page.keyboard.press('a');
  await page.keyboard.up('Control');
  await page.keyboard.press('Backspace');
  if (value !== '') await page.keyboard.type(value);
}

// counts the times an answer's "guard deciding…" appears from now on (window.decidingShown)
function watchDeciding(page) {
  return page.evaluate(() => {
    window.decidingShown = 0;
    if (window.decidingObserver) window.decidingObserver.disconnect();
    window.decidingObserver = new MutationObserver((records) => {
      for (const r of records) if (r.target.classList.contains('deciding') && r.oldValue !== null && !r.target.hidden) window.decidingShown++;
    });
    window.decidingObserver.observe(document.getElementById('turns'), { subtree: true, attributes: true, attributeFilter: ['hidden'], attributeOldValue: true });
  });
}

async function sendByKeyboard(page, text) {
  await page.focus('#prompt');
  await page.keyboard.type(text);
  await page.keyboard.press('Enter');
}

// the page's chart against the reference's probe, pause and classifier events
function assertChart(a, ref, what) {
  const probes = of(ref, 'probe');
  assert.equal(a.points.length, probes.length, `${what}: a chart point per probe reading`);
  assert.equal(a.points.length, ref.result.probe_calls, `${what}: probe_calls`);
  a.points.forEach((p, i) => {
    assert.equal(p.step, probes[i].step, `${what}: point ${i}'s step`);
    assert.ok(Math.abs(p.smoothed - probes[i].smoothed_risk) < 1e-6, `${what}: point ${i}'s smoothed risk ${p.smoothed} vs ${probes[i].smoothed_risk}`);
    assert.ok(Math.abs(p.risk - probes[i].risk) < 1e-6, `${what}: point ${i}'s risk`);
    assert.equal(p.decision, probes[i].decision, `${what}: point ${i}'s decision`);
  });
  assert.equal(a.pauses, of(ref, 'pause').length, `${what}: pause marks`);
  const calls = [...of(ref, 'classifier'), ...of(ref, 'final_check')];
  assert.equal(a.calls.length, calls.length, `${what}: classifier marks`);
  a.calls.forEach((c, i) => {
    assert.equal(c.verdict, calls[i].verdict, `${what}: classifier mark ${i}'s verdict`);
    assert.ok(Math.abs(c.score - calls[i].score) < 1e-6, `${what}: classifier mark ${i}'s score`);
  });
}

// Every element with text of its own, outside the charts, against its effective background: at
// least 4.5:1 (WCAG AA for normal text)
function contrastFailures(page) {
  return page.evaluate(() => {
    const parse = (c) => {
      const p = c.match(/[\d.]+/g).map(Number);
      return { rgb: p.slice(0, 3), a: p.length > 3 ? p[3] : 1 };
    };
    const lum = (rgb) => {
      const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
      return 0.2126 * f(rgb[0]) + 0.7152 * f(rgb[1]) + 0.0722 * f(rgb[2]);
    };
    const background = (el) => {
      for (let e = el; e; e = e.parentElement) {
        const c = parse(getComputedStyle(e).backgroundColor);
        if (c.a > 0) return c.rgb;
      }
      return [255, 255, 255];
    };
    const out = [];
    for (const el of document.body.querySelectorAll('*')) {
      if (el.closest('svg') || !el.getClientRects().length) continue;
      if (![...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
      const s = getComputedStyle(el);
      if (s.visibility === 'hidden' || el.closest('.visually-hidden')) continue;
      const fg = parse(s.color).rgb, bg = background(el);
      const [hi, lo] = [lum(fg), lum(bg)].sort((x, y) => y - x);
      const ratio = (hi + 0.05) / (lo + 0.05);
      if (ratio < 4.5) out.push(`${el.tagName.toLowerCase()}.${el.className} "${el.textContent.trim().slice(0, 30)}": ${ratio.toFixed(2)} (${s.color} on rgb(${bg}))`);
    }
    return out;
  });
}

// a screenshot in the work directory; keep: also in shots=DIR (the ones docs/ keeps)
async function shot(page, name, { keep = false } = {}) {
  const file = path.join(ctx.work, name);
  await page.screenshot({ path: file, type: 'png' });
  if (shots && keep) fs.copyFileSync(file, path.join(shots, name));
  return file;
}

main('serve_console', async () => {
  // the readings of the reference with a probe that never pauses: a pause threshold between two
  // of them pauses mid-stream; the classifier's scores at those pauses choose thresholds that allow
  // them all (the server's) and one that blocks at the first (the console's stricter setting)
  const full = reference({ pause: 1 });
  assert.equal(full.result.generated_tokens, MAX, 'the reference answer ended early');
  const readings = of(full, 'probe').map((e) => e.smoothed_risk);
  let best = null;
  for (let k = 2; k < readings.length; k++) {
    const prev = Math.max(...readings.slice(0, k)), gap = readings[k] - prev;
    if (gap > 0 && (!best || gap > best.gap)) best = { k, gap, t: prev + gap / 2 };
  }
  assert.ok(best && best.gap > 1e-3, `no reading stands clearly above the earlier ones: ${readings}`);
  const pause = Number(best.t.toFixed(6));
  const scores = of(reference({ pause, allow: 0.999999, block: 1 }), 'classifier').map((e) => e.score);
  assert.ok(scores.length >= 1, 'the reference never paused');
  const allow = Math.min(0.99, Math.ceil((Math.max(...scores) + 0.02) * 100) / 100), block = Math.min(1, Number((allow + 0.1).toFixed(2)));
  const strict = Math.floor(Math.min(...scores) * 100) / 100; // blocks at the first pause
  const completed = reference({ pause, allow, block });
  assert.ok(strict > 0, `a classifier score below 0.01: ${scores}`);
  // the console sends allow = block = strict (a request's allow may equal its block; the CLI's may
  // not): either way the first pause's score, at least strict, blocks
  const blocked = reference({ pause, allow: 0, block: strict });
  assert.equal(completed.result.status, 'completed');
  assert.equal(blocked.result.status, 'blocked');
  assert.ok(blocked.released.length > 0, 'the block comes before any text');
  console.log(`   pause threshold ${pause} (reading ${best.k + 1}), classifier allow ${allow} block ${block}, forced block at ${strict}`);

  const gemma = await startServer(ctx, ['--model_id', ctx.gemma, '--probe_path', probe, '--config_path', configWithPause(pause), '--classifier_dir', ctx.classifier,
    '--classifier_allow_threshold', String(allow), '--classifier_block_threshold', String(block), '--allow_observe', '--ctx_size', '512', '--parallel', '2',
    '--model_name', MODEL_NAME]);
  const slowProbe = writeProbe(path.join(ctx.work, 'slow-probe'), { modelId: ctx.slow, hidden: 640, weights: (i) => 0.02 * Math.cos(0.7 * i), pause: 1 });
  const slow = await startServer(ctx, ['--model_id', ctx.slow, '--probe_path', slowProbe, '--ctx_size', '4096', '--parallel', '1', '--api_key', KEY]);
  const base = `http://127.0.0.1:${gemma.port}`;

  await step('the files: embedded as web/ holds them, with their content types and a content security policy; the page needs no key', async () => {
    const types = { html: /^text\/html; charset=utf-8$/, css: /^text\/css; charset=utf-8$/, js: /^text\/javascript; charset=utf-8$/, svg: /^image\/svg\+xml$/ };
    for (const name of fs.readdirSync(webDir)) {
      const r = await request(slow.port, 'GET', name === 'index.html' ? '/' : `/console/${name}`); // the keyed server
      assert.equal(r.status, 200, `${name}: ${r.status}`);
      assert.equal(r.text, fs.readFileSync(path.join(webDir, name), 'utf8'), `${name}: the bytes served are not web/'s`);
      assert.match(r.headers['content-type'], types[name.split('.').pop()], name);
      assert.match(r.headers['content-security-policy'], /script-src 'self'/);
      assert.equal(r.headers['x-content-type-options'], 'nosniff');
    }
    assert.equal((await request(gemma.port, 'GET', '/console/index.html')).status, 200);
    assert.equal((await request(gemma.port, 'GET', '/console/missing.js')).status, 404);
    assert.equal((await request(gemma.port, 'GET', '/console/../index.html')).status, 404);
    assert.equal((await request(gemma.port, 'POST', '/', { body: '{}' })).status, 405);
    const head = await request(gemma.port, 'HEAD', '/');
    assert.equal(head.status, 200);
    assert.equal(head.text, '');
  });

  await step('GET /v1/guard/config: the server\'s settings; behind the key like the other routes, a 401 says one is needed', async () => {
    const r = await request(gemma.port, 'GET', '/v1/guard/config');
    assert.equal(r.status, 200, r.text);
    const c = r.json;
    assert.equal(c.object, 'guard.config');
    assert.equal(c.model, MODEL_NAME);
    assert.equal(c.api_key_required, false);
    assert.equal(c.refusal, REFUSAL);
    assert.deepEqual(c.probe, { layer: -4, hidden_state_index: c.probe.hidden_state_index, probe_every_n_tokens: 4, smoothing_window: 4,
      threshold: suspiciousBelow(pause), pause_threshold: pause });
    assert.ok(Number.isInteger(c.probe.hidden_state_index) && c.probe.hidden_state_index > 0);
    assert.equal(c.classifier.labels.length, 3);
    assert.ok(c.classifier.labels.includes(c.classifier.unsafe_label));
    assert.equal(c.classifier.allow_threshold, allow);
    assert.equal(c.classifier.block_threshold, block);
    assert.equal(c.allow_observe, true);
    assert.equal(c.final_classifier_check, false);
    assert.equal(c.ctx_size, 512);
    const k = await request(slow.port, 'GET', '/v1/guard/config');
    assert.equal(k.status, 401);
    assert.equal(k.json.error.code, 'invalid_api_key');
    const ok = await request(slow.port, 'GET', '/v1/guard/config', { headers: { Authorization: `Bearer ${KEY}` } });
    assert.equal(ok.status, 200);
    assert.equal(ok.json.api_key_required, true);
    assert.equal(ok.json.classifier, null);
  });

  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'opencon-chromium-'));
  const browser = await puppeteer.launch({
    executablePath: chromium, headless: true, userDataDir,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--no-default-browser-check', '--disable-extensions', '--hide-scrollbars'],
  });
  const errors = [];
  let allow401 = false;
  const watch = (page) => {
    page.on('console', (m) => {
      if (m.type() !== 'error') return;
      if (allow401 && /status of 401/.test(m.text())) return;
      errors.push(`console: ${m.text()}`);
    });
    page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
    return page;
  };
  try {
    const page = watch(await browser.newPage());
    await page.setViewport({ width: 1280, height: 880 });
    const chats = [];
    page.on('request', (r) => { if (r.url().endsWith('/v1/chat/completions')) chats.push(JSON.parse(r.postData())); });

    await step('the console loads and shows the server\'s settings', async () => {
      await page.goto(`${base}/`, { waitUntil: 'load' });
      await page.waitForFunction(() => document.getElementById('server-status').dataset.kind === 'ok', { timeout: 20000 * SLOW });
      const info = await page.$eval('#server-info', (e) => e.textContent);
      assert.ok(info.includes(MODEL_NAME), info);
      assert.ok(info.includes('layer -4') && info.includes(`pause ${pause.toFixed(2)}`) && info.includes('every 4 tokens'), info);
      assert.ok(info.includes(`allow below ${allow.toFixed(2)}`) && info.includes(`block from ${block.toFixed(2)}`), info);
      assert.equal(await page.$eval('#observe', (e) => e.disabled), false);
      assert.equal(await page.$eval('#key-panel', (e) => e.hidden), true);
      assert.equal(await page.evaluate(() => document.activeElement.id), 'prompt', 'the message box has the focus');
    });

    await step('keyboard: every control is reached by Tab', async () => {
      const ids = await page.evaluate(() => {
        const els = [...document.querySelectorAll('a[href], button, input, textarea, summary, [tabindex]')].filter((e) => !e.disabled && e.getClientRects().length);
        els.forEach((e, i) => { e.dataset.tabCheck = String(i); });
        return els.map((e) => e.id || e.textContent.trim().slice(0, 20));
      });
      const seen = new Set();
      await page.evaluate(() => document.activeElement.blur());
      for (let i = 0; i < ids.length + 5; i++) {
        await page.keyboard.press('Tab');
        const t = await page.evaluate(() => document.activeElement.dataset.tabCheck);
        if (t !== undefined) seen.add(Number(t));
      }
      const missed = ids.filter((_, i) => !seen.has(i));
      assert.deepEqual(missed, [], `not reached by Tab: ${missed}`);
    });

    await step('Shift+Enter is a new line, not a send', async () => {
      await page.focus('#prompt');
      await page.keyboard.type('x');
      await page.keyboard.down('Shift');
      await page.keyboard.press('Enter');
      await page.keyboard.up('Shift');
      assert.equal(await page.$eval('#prompt', (e) => e.value), 'x\n');
      assert.equal(await page.$$eval('.turn', (t) => t.length), 0);
      await fill(page, '#prompt', '');
    });

    await step('a completed answer: the released text, a chart point per probe reading, the pauses and the classifier\'s allows, the badge', async () => {
      await fill(page, '#temperature', '0');
      await fill(page, '#max-tokens', String(MAX));
      await watchDeciding(page);
      await sendByKeyboard(page, PROMPT);
      const a = await waitAnswer(page, 'completed');
      assert.equal(await page.evaluate(() => window.decidingShown), of(completed, 'pause').length, '"guard deciding…" shown once per pause');
      assert.equal(a.state, 'completed', JSON.stringify(a));
      assert.equal(a.text, completed.released, 'the text shown is not what the guard released');
      assert.equal(a.refusal, null);
      assert.match(a.badge, /^completed · (stop|length)$/);
      assert.ok(a.numbers.includes(`probe calls${completed.result.probe_calls}`) && a.numbers.includes(`classifier calls${completed.result.classifier_calls}`),
        a.numbers);
      assertChart(a, completed, 'completed');
      assert.ok(a.pauses >= 1 && a.calls.every((c) => c.verdict === 'allow'), 'the answer paused and the classifier allowed it');
      assert.ok(a.chartLabel.includes(`${a.points.length} probe readings`), a.chartLabel);
      const body = chats.at(-1);
      assert.deepEqual(body.messages, [{ role: 'user', content: PROMPT }]);
      assert.equal(body.temperature, 0);
      assert.equal(body.max_tokens, MAX);
      assert.deepEqual(body.guard, { events: true });
      assert.equal(body.stream, true);
      await page.evaluate(() => window.scrollTo(0, 0));
      await shot(page, 'console-completed.png', { keep: true });
    });

    await step('hover and arrow keys read a chart point', async () => {
      await page.$eval('.answer .chart-svg', (e) => e.focus()); // an SVG element: puppeteer's focus() takes HTML ones only
      await page.keyboard.press('Home');
      const first = await page.$eval('.answer .readout', (e) => e.textContent);
      assert.match(first, new RegExp(`^token ${completed.events.find((e) => e.event === 'probe').step} · risk `));
      await page.keyboard.press('ArrowRight');
      assert.notEqual(await page.$eval('.answer .readout', (e) => e.textContent), first);
      const box = await (await page.$('.answer .chart-svg')).boundingBox();
      await page.mouse.move(box.x + box.width - 14, box.y + box.height / 2);
      assert.match(await page.$eval('.answer .readout', (e) => e.textContent), /^token \d+ · risk [\d.]+ · smoothed [\d.]+ · \w+/);
    });

    await step('multi-turn: the second request carries the conversation', async () => {
      const first = await lastAnswer(page);
      await sendByKeyboard(page, 'and then?');
      const a = await waitAnswer(page, 'second turn');
      assert.ok(['completed', 'blocked', 'uncertain'].includes(a.state), a.state);
      assert.deepEqual(chats.at(-1).messages, [{ role: 'user', content: PROMPT }, { role: 'assistant', content: first.text }, { role: 'user', content: 'and then?' }]);
      assert.equal(await page.$$eval('.answer', (x) => x.length), 2);
    });

    await step('new chat (by keyboard) clears the conversation', async () => {
      await page.focus('#new-chat');
      await page.keyboard.press('Enter');
      assert.equal(await page.$$eval('.turn', (t) => t.length), 0);
      assert.equal(await page.evaluate(() => document.activeElement.id), 'prompt');
    });

    await step('a forced block (a stricter block threshold in the settings): the cleared text, then the refusal and the content_filter badge', async () => {
      await fill(page, '#block-threshold', String(strict));
      await sendByKeyboard(page, PROMPT);
      const a = await waitAnswer(page, 'blocked');
      assert.equal(a.state, 'blocked', JSON.stringify(a));
      assert.equal(a.refusal, REFUSAL);
      assert.equal(a.text, blocked.released, 'the text shown before the refusal is not what the guard cleared');
      assert.match(a.badge, /^blocked · content_filter$/);
      assert.equal(a.deciding, false);
      assertChart(a, blocked, 'blocked');
      assert.equal(a.calls.at(-1).verdict, 'block');
      assert.deepEqual(chats.at(-1).messages, [{ role: 'user', content: PROMPT }], 'a new chat starts a new conversation');
      assert.deepEqual(chats.at(-1).guard, { events: true, classifier_block_threshold: strict, classifier_allow_threshold: strict });
      const shown = await page.$eval('.answer .refusal', (e) => getComputedStyle(e).display);
      assert.notEqual(shown, 'none');
      await page.evaluate(() => window.scrollTo(0, 0));
      await shot(page, 'console-blocked.png', { keep: true });
    });

    await step('observe mode: everything streams, the badge says what the guard would have done', async () => {
      await page.click('#new-chat');
      await page.click('#observe');
      await watchDeciding(page);
      await sendByKeyboard(page, PROMPT);
      const a = await waitAnswer(page, 'observe');
      assert.equal(a.refusal, null);
      assert.equal(a.text, full.released, 'observe mode streams every token');
      assert.equal(await page.evaluate(() => window.decidingShown), 0, 'nothing is held in observe mode');
      assert.match(a.badge, /^observe · the guard would have stopped it: blocked · (stop|length)$/);
      assert.equal(chats.at(-1).guard.mode, 'observe');
      await page.click('#observe');
      await fill(page, '#block-threshold', '');
    });

    await step('moderation: the three label scores as bars and the verdict, as the API gives them', async () => {
      const prompt = 'How do I pick a lock?', response = 'Insert a tension wrench and rake the pins.';
      await fill(page, '#mod-prompt', prompt);
      await fill(page, '#mod-response', response);
      await page.click('#mod-send');
      await page.waitForSelector('#mod-result .bar-row', { timeout: 20000 * SLOW });
      const shown = await page.$$eval('#mod-result .bar-row', (rows) => rows.map((r) => ({ label: r.dataset.label, score: Number(r.dataset.score),
        text: r.querySelector('.bar-value').textContent, width: r.querySelector('.bar-fill').style.width })));
      const api = (await post(gemma.port, '/v1/moderations', { input: [{ prompt, response }] })).json.results[0];
      assert.equal(shown.length, 3);
      assert.deepEqual(shown.map((s) => s.label), Object.keys(api.category_scores));
      for (const s of shown) {
        assert.ok(Math.abs(s.score - api.category_scores[s.label]) < 1e-9, `${s.label}: ${s.score} vs ${api.category_scores[s.label]}`);
        assert.equal(s.text, api.category_scores[s.label].toFixed(3));
        assert.equal(s.width, `${Math.round(1000 * api.category_scores[s.label]) / 10}%`);
      }
      const verdict = await page.$eval('#mod-result .badge', (e) => e.textContent);
      assert.ok(verdict.startsWith(`${api.guard.verdict} · score ${api.guard.score.toFixed(3)}`), verdict);
    });

    await step('readable: text contrast at least 4.5:1 everywhere', async () => {
      const bad = await contrastFailures(page);
      assert.deepEqual(bad, []);
    });

    await step('phone width: no sideways scrolling, the chart below the text', async () => {
      await page.setViewport({ width: 390, height: 844 }); // (isMobile would reload the page)
      const m = await page.evaluate(() => {
        const a = document.querySelector('.answer');
        const box = (e) => { const r = e.getBoundingClientRect(); return { top: r.top, bottom: r.bottom, width: r.width }; };
        return { scroll: document.documentElement.scrollWidth, width: window.innerWidth, text: box(a.querySelector('.answer-body')), chart: box(a.querySelector('figure')) };
      });
      assert.ok(m.scroll <= m.width, `the page is ${m.scroll} px wide at ${m.width}`);
      assert.ok(m.chart.top >= m.text.bottom - 1, `the chart is not below the text: ${JSON.stringify(m)}`);
      assert.ok(m.chart.width > 300, `the chart is ${m.chart.width} px wide`);
      await shot(page, 'console-phone.png');
      assert.deepEqual(await contrastFailures(page), []);
    });
    await page.close();

    const keyed = watch(await browser.newPage());
    await keyed.setViewport({ width: 1100, height: 800 });
    const kbase = `http://127.0.0.1:${slow.port}`;
    const keyedChats = [];
    keyed.on('request', (r) => { if (r.url().endsWith('/v1/chat/completions')) keyedChats.push(JSON.parse(r.postData())); });

    await step('API key: asked for, a wrong one refused with a message, the right one kept for the session', async () => {
      allow401 = true; // the browser logs each 401 it receives as a failed resource
      await keyed.goto(`${kbase}/`, { waitUntil: 'load' });
      await keyed.waitForFunction(() => !document.getElementById('key-panel').hidden, { timeout: 10000 * SLOW });
      assert.match(await keyed.$eval('#key-message', (e) => e.textContent), /requires an API key/);
      assert.equal(await keyed.evaluate(() => document.activeElement.id), 'key-input');
      await keyed.keyboard.type('wrong-key');
      await keyed.keyboard.press('Enter');
      await keyed.waitForFunction(() => /refused this key/.test(document.getElementById('key-message').textContent), { timeout: 10000 * SLOW });
      assert.match(await keyed.$eval('#key-message', (e) => e.textContent), /401: a valid API key is required/);
      assert.equal(await keyed.$eval('#key-panel', (e) => e.hidden), false);
      await keyed.keyboard.type(KEY);
      await keyed.keyboard.press('Enter');
      await keyed.waitForFunction(() => document.getElementById('server-status').dataset.kind === 'ok', { timeout: 10000 * SLOW });
      assert.equal(await keyed.evaluate(() => sessionStorage.getItem('opencon.apiKey')), KEY);
      allow401 = false;
      await keyed.reload({ waitUntil: 'load' });
      await keyed.waitForFunction(() => document.getElementById('server-status').dataset.kind === 'ok', { timeout: 10000 * SLOW });
      assert.equal(await keyed.$eval('#key-panel', (e) => e.hidden), true, 'asked again after a reload');
      assert.match(await keyed.$eval('#mod-result', (e) => e.textContent), /no exchange classifier/);
    });

    await step('the text streams in more than one step', async () => {
      await fill(keyed, '#temperature', '0');
      await fill(keyed, '#max-tokens', '96');
      await keyed.evaluate(() => {
        window.samples = [];
        const n = document.querySelectorAll('.answer').length;
        const tick = () => {
          const a = document.querySelectorAll('.answer')[n];
          if (a) window.samples.push(a.querySelector('.released').textContent);
          if (!a || a.dataset.state === 'streaming') setTimeout(tick, 2);
        };
        tick();
      });
      await sendByKeyboard(keyed, 'hello');
      const a = await waitAnswer(keyed, 'slow');
      assert.equal(a.state, 'completed', JSON.stringify(a));
      assert.ok(a.text.length > 0);
      const samples = await keyed.evaluate(() => window.samples);
      const partial = new Set(samples.filter((s) => s.length > 0 && s.length < a.text.length));
      for (const s of samples) assert.ok(a.text.startsWith(s), 'a partial text that is not a prefix of the answer');
      assert.ok(partial.size >= 2, `the text appeared in ${partial.size + 1} step(s) (${samples.length} samples)`);
      assert.equal(a.points.length, Math.ceil(96 / 4), 'a point per probe reading');
    });

    await step('stop (Esc) cancels the request: the answer is marked stopped and the server frees its slot', async () => {
      await fill(keyed, '#max-tokens', '3000');
      await sendByKeyboard(keyed, 'go on');
      await keyed.waitForFunction(() => [...document.querySelectorAll('.answer')].pop().querySelector('.released').textContent.length > 0,
        { timeout: 30000 * SLOW, polling: 10 });
      assert.equal(await keyed.$eval('#stop', (e) => e.disabled), false);
      await keyed.keyboard.press('Escape');
      const a = await waitAnswer(keyed, 'stopped');
      assert.equal(a.state, 'stopped');
      assert.match(a.badge, /^stopped/);
      assert.equal(await keyed.$eval('#send', (e) => e.disabled), false);
      const auth = { Authorization: `Bearer ${KEY}` };
      await waitFor('the slot freed', async () => (await metrics(slow.port, auth)).opencon_busy_slots === 0, 10000 * SLOW, 50);
      const t1 = (await metrics(slow.port, auth)).opencon_decode_tokens_total;
      await new Promise((r) => setTimeout(r, 300));
      assert.equal((await metrics(slow.port, auth)).opencon_decode_tokens_total, t1, 'the generation ran on after the stop');
      assert.ok(t1 < 96 + 3000, `${t1} tokens decoded: the stop came after the whole answer`);
    });

    await step('new chat while an answer streams: it is cancelled and stays out of the new conversation', async () => {
      await sendByKeyboard(keyed, 'one more');
      await keyed.waitForFunction(() => [...document.querySelectorAll('.answer')].pop().querySelector('.released').textContent.length > 0,
        { timeout: 30000 * SLOW, polling: 10 });
      await keyed.click('#new-chat');
      await keyed.waitForFunction(() => !document.getElementById('send').disabled, { timeout: 10000 * SLOW });
      await fill(keyed, '#max-tokens', '8');
      await sendByKeyboard(keyed, 'fresh');
      const a = await waitAnswer(keyed, 'fresh');
      assert.equal(a.state, 'completed');
      assert.deepEqual(keyedChats.at(-1).messages, [{ role: 'user', content: 'fresh' }]);
      assert.equal(await keyed.$$eval('.answer', (x) => x.length), 1);
    });
    await keyed.close();

    await step('no errors in the browser console', async () => {
      assert.deepEqual(errors, []);
    });
  } finally {
    await browser.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
  for (const s of [gemma, slow]) await stopServer(s);
});
