// The opencon console: a chat with the served model that shows the guard at work, a moderation
// panel, and the server's guard settings. It uses only the public API (GET /v1/guard/config,
// POST /v1/chat/completions with "guard": {"events": true}, POST /v1/moderations), so anything it
// does a client can do. The server never sends held text: while a pause's classifier call runs the
// answer shows "guard deciding…" in its place.
import { RiskChart, fmt } from './chart.js';
import { readSSE } from './sse.js';

const KEY_STORE = 'opencon.apiKey';
const $ = (id) => document.getElementById(id);

const state = {
  config: null, // GET /v1/guard/config
  messages: [], // the conversation as sent: {role, content}
  current: null, // the answer streaming now: {ctrl, view}
  settingsTouched: false,
};

// ---- the API key: asked for once, kept for the browser session ----
function apiKey() { return sessionStorage.getItem(KEY_STORE) || ''; }
function authHeaders() {
  const k = apiKey();
  return k ? { Authorization: `Bearer ${k}` } : {};
}

function askKey(refusedMessage) {
  const sent = apiKey() !== '';
  $('key-message').textContent = sent
    ? `The server refused this key (401: ${refusedMessage}). Enter another one.`
    : 'This server requires an API key. Enter it to use the console.';
  $('key-panel').hidden = false;
  $('key-button').hidden = false;
  $('key-input').value = '';
  $('key-input').focus();
  setStatus(sent ? 'API key refused' : 'API key required', 'warn');
}

$('key-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const k = $('key-input').value.trim();
  if (!k) return;
  sessionStorage.setItem(KEY_STORE, k);
  $('key-panel').hidden = true;
  loadConfig().then(() => { if (state.config) $('prompt').focus(); });
});
$('key-button').addEventListener('click', () => {
  $('key-message').textContent = 'Enter the key to use for this server.';
  $('key-panel').hidden = false;
  $('key-input').focus();
});

// ---- helpers ----
function setStatus(text, kind = 'ok') {
  const s = $('server-status');
  s.textContent = text;
  s.dataset.kind = kind;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// the message of an OpenAI error body, or the status line
async function errorMessage(res) {
  const text = await res.text().catch(() => '');
  try {
    const j = JSON.parse(text);
    if (j && j.error && j.error.message) return j.error.message;
  } catch { /* not JSON */ }
  return text.trim() || `${res.status} ${res.statusText}`;
}

function h(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function num(id) {
  const v = $(id).value.trim();
  if (v === '') return null;
  const n = Number(v);
  return Number.isFinite(n) ? n : null;
}

// ---- the server's settings ----
async function loadConfig() {
  setStatus('connecting…', 'wait');
  for (;;) {
    let res;
    try {
      res = await fetch('/v1/guard/config', { headers: authHeaders() });
    } catch {
      setStatus('cannot reach the server; retrying…', 'warn');
      await sleep(2000);
      continue;
    }
    if (res.ok) {
      state.config = await res.json();
      showConfig(state.config);
      setStatus(`ready · ${state.config.model}`, 'ok');
      return;
    }
    const msg = await errorMessage(res);
    if (res.status === 401) { askKey(msg); return; }
    if (res.status === 503) { setStatus(`${msg}; waiting…`, 'wait'); await sleep(1000); continue; }
    setStatus(`the server answered ${res.status}: ${msg}`, 'error');
    return;
  }
}

function showConfig(c) {
  const dl = $('server-info');
  dl.replaceChildren();
  const add = (k, v) => { dl.append(h('dt', '', k), h('dd', '', v)); };
  add('Model', c.model);
  if (c.probe) {
    add('Probe', `layer ${c.probe.layer} (hidden state ${c.probe.hidden_state_index}), every ${c.probe.probe_every_n_tokens} tokens`);
    add('Smoothing', `mean of the last ${c.probe.smoothing_window} readings`);
    add('Thresholds', `suspicious ${fmt(c.probe.threshold, 2)} · pause ${fmt(c.probe.pause_threshold, 2)}`);
  } else {
    add('Probe', 'none: plain generation, nothing is held');
  }
  if (c.classifier) {
    add('Classifier', c.classifier.labels.join(' · '));
    add('Verdicts', `allow below ${fmt(c.classifier.allow_threshold, 2)} · block from ${fmt(c.classifier.block_threshold, 2)} (${c.classifier.unsafe_label})`);
  } else {
    add('Classifier', 'none: a pause stops the answer');
  }
  add('Final check', c.final_classifier_check ? 'the whole answer is classified at the end' : 'off');
  add('Context', `${c.ctx_size} tokens per request`);
  add('API key', c.api_key_required ? 'required' : 'not required');
  // settings that depend on the server
  const observe = $('observe');
  observe.disabled = !c.allow_observe;
  $('observe-hint').textContent = c.allow_observe
    ? 'Everything streams; the badge says what the guard would have done.'
    : 'Not allowed on this server (start it with --allow_observe).';
  if (!c.allow_observe) observe.checked = false;
  $('pause-threshold').placeholder = c.probe ? `server: ${fmt(c.probe.pause_threshold, 2)}` : 'no probe';
  $('pause-threshold').disabled = !c.probe;
  if (c.probe) $('pause-threshold').max = String(c.probe.pause_threshold);
  $('block-threshold').placeholder = c.classifier ? `server: ${fmt(c.classifier.block_threshold, 2)}` : 'no classifier';
  $('block-threshold').disabled = !c.classifier;
  if (c.classifier) $('block-threshold').max = String(c.classifier.block_threshold);
  const mt = $('max-tokens');
  mt.max = String(c.ctx_size);
  if (!state.settingsTouched) mt.value = String(Math.max(1, Math.min(256, Math.floor(c.ctx_size / 4))));
  $('mod-send').disabled = !c.classifier;
  if (!c.classifier) showModerationError('This server has no exchange classifier.');
}

$('settings').addEventListener('input', () => { state.settingsTouched = true; });
$('settings').addEventListener('submit', (ev) => ev.preventDefault());

// the guard fields of a request from the settings: events always; stricter thresholds when given
function guardSettings() {
  const g = { events: true };
  const c = state.config;
  if ($('observe').checked && c.allow_observe) g.mode = 'observe';
  const pause = num('pause-threshold');
  if (pause !== null && c.probe) g.pause_threshold = pause;
  const block = num('block-threshold');
  if (block !== null && c.classifier) {
    g.classifier_block_threshold = block;
    g.classifier_allow_threshold = Math.min(block, c.classifier.allow_threshold);
  }
  return g;
}

// ---- one answer: released text, "guard deciding…", the refusal, the chart and the badge ----
class AnswerView {
  constructor(list, config, guard) {
    this.li = h('li', 'turn assistant');
    this.article = h('article', 'answer');
    this.article.dataset.state = 'streaming';
    const body = h('div', 'answer-body');
    body.append(h('h2', 'visually-hidden', 'Answer'));
    this.textBox = h('div', 'answer-text');
    this.released = h('span', 'released');
    this.deciding = h('span', 'deciding', 'guard deciding…');
    this.deciding.hidden = true;
    this.deciding.title = 'The probe paused the stream: the exchange classifier is deciding whether the held text is released. Held text is never sent to the browser.';
    this.textBox.append(this.released, this.deciding);
    this.refusal = h('p', 'refusal');
    this.refusal.hidden = true;
    this.error = h('p', 'error');
    this.error.hidden = true;
    this.error.setAttribute('role', 'alert');
    this.badge = h('p', 'badge badge-streaming', 'streaming…');
    this.badge.setAttribute('role', 'status');
    this.numbers = h('dl', 'numbers');
    body.append(this.textBox, this.refusal, this.error, this.badge, this.numbers);
    const figure = h('figure');
    const pause = guard.pause_threshold ?? config.probe?.pause_threshold ?? null;
    const block = guard.classifier_block_threshold ?? config.classifier?.block_threshold ?? null;
    this.chart = new RiskChart(figure, { pause: config.probe ? pause : null, block: config.classifier ? block : null, probeEvery: config.probe?.probe_every_n_tokens });
    this.article.append(body, figure);
    this.li.append(this.article);
    list.append(this.li);
    this.observe = guard.mode === 'observe';
    this.hasClassifier = !!config.classifier;
    this.content = ''; // every content delta, as the API sent them (the conversation's assistant message)
    this.deltas = [];
    this.usage = null;
    this.finished = false;
  }

  chunk(c) {
    if (c.error) { this.fail(c.error.message || 'the server reported an error'); return; }
    if (c.usage) this.usage = c.usage;
    const ch = c.choices && c.choices[0];
    if (!ch) return;
    if (c.guard && Array.isArray(c.guard.events)) for (const e of c.guard.events) this.event(e);
    const d = ch.delta && ch.delta.content;
    if (typeof d === 'string' && d) this.text(d);
    if (ch.finish_reason) this.finish(ch.finish_reason, c.guard);
  }

  event(e) {
    switch (e.event) {
      case 'probe': this.chart.addReading(e); break;
      case 'pause':
        this.chart.addPause(e);
        if (this.hasClassifier && !this.observe) this.deciding.hidden = false;
        break;
      case 'classifier': this.chart.addCall(e); this.deciding.hidden = true; break;
      case 'final_check': this.chart.addCall(e, true); break;
      case 'nonfinite': this.chart.addNonfinite(e); break;
      default: break; // "suspicious": the probe event says so already
    }
  }

  text(d) {
    this.content += d;
    const node = document.createTextNode(d);
    this.deltas.push(node);
    this.released.append(node);
  }

  // after a guard stop the last content delta is the refusal ("\n\n" + refusal after released text)
  finish(reason, guard) {
    this.finished = true;
    this.deciding.hidden = true;
    if (reason === 'content_filter' && this.deltas.length) {
      const last = this.deltas.pop();
      last.remove();
      this.refusal.textContent = last.textContent.replace(/^\n\n/, '');
      this.refusal.hidden = false;
    }
    const g = guard || {};
    const status = g.status || 'completed';
    this.article.dataset.state = status;
    this.badge.className = `badge badge-${status}`;
    this.badge.textContent = g.mode === 'observe'
      ? `observe · ${status === 'completed' ? 'the guard would have let it through' : `the guard would have stopped it: ${status}`} · ${reason}`
      : `${status} · ${reason}`;
    this.showNumbers(g);
  }

  showNumbers(g) {
    const dl = this.numbers;
    dl.replaceChildren();
    const add = (k, v) => { const d = h('div'); d.append(h('dt', '', k), h('dd', '', v)); dl.append(d); };
    add('risk', fmt(g.risk));
    add('smoothed', fmt(g.smoothed_risk));
    add('max', fmt(g.max_risk));
    add('classifier', g.classifier_verdict ? `${g.classifier_verdict} ${fmt(g.classifier_score)}` : '–');
    add('probe calls', String(g.probe_calls ?? '–'));
    add('classifier calls', String(g.classifier_calls ?? '–'));
    add('held', `${fmt(g.held_ms, 1)} ms`);
    add('stop', g.stop_reason || '–');
    if (this.usage) add('tokens', `${this.usage.prompt_tokens} in · ${this.usage.completion_tokens} out`);
  }

  fail(message) {
    this.finished = true;
    this.deciding.hidden = true;
    this.error.textContent = message;
    this.error.hidden = false;
    this.article.dataset.state = 'error';
    this.badge.className = 'badge badge-error';
    this.badge.textContent = 'error';
  }

  stopped() {
    this.finished = true;
    this.deciding.hidden = true;
    this.article.dataset.state = 'stopped';
    this.badge.className = 'badge badge-stopped';
    this.badge.textContent = 'stopped · the request was cancelled';
  }
}

// ---- the chat ----
function addUserTurn(text) {
  const li = h('li', 'turn user');
  li.append(h('h2', 'visually-hidden', 'You'), h('p', 'bubble', text));
  $('turns').append(li);
  $('empty').hidden = true;
  return li;
}

function setBusy(busy) {
  $('send').disabled = busy;
  $('stop').disabled = !busy;
  $('turns').setAttribute('aria-busy', String(busy));
}

function nearBottom() {
  const s = document.scrollingElement;
  return s.scrollHeight - s.scrollTop - s.clientHeight < 120;
}
function follow(wasNear) {
  if (wasNear) window.scrollTo({ top: document.scrollingElement.scrollHeight });
}

async function send() {
  const prompt = $('prompt');
  const text = prompt.value;
  if (!text.trim() || state.current) return;
  if (!state.config) { setStatus('the server is not ready yet', 'warn'); return; }
  prompt.value = '';
  const userTurn = addUserTurn(text);
  const conversation = state.messages; // "New chat" while this streams starts another: this answer stays in its own
  conversation.push({ role: 'user', content: text });
  const guard = guardSettings();
  const body = {
    model: state.config.model,
    messages: conversation.slice(),
    stream: true,
    stream_options: { include_usage: true },
    max_tokens: Math.max(1, Math.round(num('max-tokens') ?? 256)),
    temperature: Math.max(0, num('temperature') ?? 1),
    guard,
  };
  const view = new AnswerView($('turns'), state.config, guard);
  const ctrl = new AbortController();
  state.current = { ctrl, view };
  setBusy(true);
  follow(true);
  let ok = false;
  try {
    const res = await fetch('/v1/chat/completions', {
      method: 'POST', headers: { 'Content-Type': 'application/json', ...authHeaders() }, body: JSON.stringify(body), signal: ctrl.signal,
    });
    if (!res.ok) {
      const msg = await errorMessage(res);
      view.fail(`${res.status}: ${msg}`);
      if (res.status === 401) askKey(msg);
    } else {
      for await (const ev of readSSE(res.body)) {
        if (ev.data === null) continue; // ": guard holding" while the classifier decides
        if (ev.data === '[DONE]') break;
        const near = nearBottom();
        view.chunk(JSON.parse(ev.data));
        follow(near);
      }
      if (!view.finished) view.fail('the stream ended without a finish_reason');
      ok = view.article.dataset.state !== 'error';
    }
  } catch (e) {
    if (e.name === 'AbortError') { view.stopped(); ok = view.content !== ''; } else view.fail(`the request failed: ${e.message}`);
  } finally {
    state.current = null;
    setBusy(false);
  }
  // the answer joins the conversation as the API sent it; a failed request leaves it
  if (ok) conversation.push({ role: 'assistant', content: view.content });
  else {
    conversation.pop();
    userTurn.classList.add('not-sent');
    userTurn.title = 'Not part of the conversation: the request failed or was stopped before any text.';
  }
  if (document.activeElement === document.body || document.activeElement === $('stop')) prompt.focus();
}

function stop() {
  if (state.current) state.current.ctrl.abort();
}

function newChat() {
  stop();
  state.messages = [];
  $('turns').replaceChildren();
  $('empty').hidden = false;
  $('prompt').focus();
}

$('composer').addEventListener('submit', (ev) => { ev.preventDefault(); send(); });
$('prompt').addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); send(); }
});
document.addEventListener('keydown', (ev) => { if (ev.key === 'Escape' && state.current) { ev.preventDefault(); stop(); } });
$('stop').addEventListener('click', stop);
$('new-chat').addEventListener('click', newChat);

// ---- moderation: the classifier's label scores for one exchange ----
function showModerationError(message) {
  const box = $('mod-result');
  box.replaceChildren(h('p', 'error', message));
}

$('moderation').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const c = state.config;
  if (!c || !c.classifier) return;
  const box = $('mod-result');
  const btn = $('mod-send');
  btn.disabled = true;
  box.replaceChildren(h('p', 'hint', 'classifying…'));
  try {
    const res = await fetch('/v1/moderations', {
      method: 'POST', headers: { 'Content-Type': 'application/json', ...authHeaders() },
      body: JSON.stringify({ input: [{ prompt: $('mod-prompt').value, response: $('mod-response').value }] }),
    });
    if (!res.ok) {
      const msg = await errorMessage(res);
      showModerationError(`${res.status}: ${msg}`);
      if (res.status === 401) askKey(msg);
      return;
    }
    const r = (await res.json()).results[0];
    const verdict = r.guard.verdict;
    const head = h('p', `badge badge-verdict-${verdict}`, `${verdict} · score ${fmt(r.guard.score)}${r.flagged ? ' · flagged' : ''}`);
    head.setAttribute('role', 'status');
    const bars = h('ul', 'bars');
    for (const label of c.classifier.labels) {
      const v = r.category_scores[label];
      const li = h('li', `bar-row${label === r.guard.unsafe_label ? ' unsafe' : ''}`);
      li.dataset.label = label;
      li.dataset.score = String(v);
      const name = h('span', 'bar-label', label);
      const track = h('span', 'bar-track');
      const fill = h('span', 'bar-fill');
      fill.style.width = `${Math.round(1000 * Math.min(1, Math.max(0, v ?? 0))) / 10}%`;
      track.append(fill);
      track.setAttribute('aria-hidden', 'true');
      li.append(name, track, h('span', 'bar-value', fmt(v)));
      bars.append(li);
    }
    box.replaceChildren(head, bars, h('p', 'hint', `Thresholds: allow below ${fmt(c.classifier.allow_threshold, 2)}, block from ${fmt(c.classifier.block_threshold, 2)} ` +
      `(score = P(${r.guard.unsafe_label})).`));
  } catch (e) {
    showModerationError(`the request failed: ${e.message}`);
  } finally {
    btn.disabled = !(state.config && state.config.classifier);
  }
});

loadConfig();
