// The risk chart beside each answer: an SVG drawn from the guard's events as they stream in.
// One point per probe reading ("probe" events: risk and smoothed risk by token step), the pause and
// block thresholds as lines, pauses as vertical marks, classifier calls as diamonds at their score
// with their verdict. Hover or focus (then arrow keys) shows a reading's values in the caption.
const NS = 'http://www.w3.org/2000/svg';
const W = 340, H = 190; // the viewBox; the SVG scales to its box
const M = { left: 34, right: 12, top: 12, bottom: 26 };

function el(name, attrs = {}, parent = null) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (parent) parent.appendChild(e);
  return e;
}

export function fmt(v, digits = 3) {
  return typeof v === 'number' && Number.isFinite(v) ? v.toFixed(digits) : '–';
}

export class RiskChart {
  // figure: an empty <figure>; thresholds: {pause, block} (numbers or null: not drawn)
  constructor(figure, { pause = null, block = null, probeEvery = null } = {}) {
    this.readings = []; // {step, risk, smoothed, decision}
    this.pauses = []; // steps
    this.calls = []; // {step, verdict, score, final}
    this.nonfinite = []; // {step, what}
    this.thresholds = { pause, block };
    this.probeEvery = probeEvery;
    this.selected = -1;
    this.figure = figure;
    figure.classList.add('chart');
    this.svg = el('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart-svg', tabindex: 0, role: 'img', focusable: 'true' }, figure);
    this.caption = document.createElement('figcaption');
    this.caption.className = 'readout';
    this.caption.setAttribute('aria-live', 'polite');
    figure.appendChild(this.caption);
    const legend = document.createElement('p');
    legend.className = 'legend';
    for (const [cls, text] of [['sw-smoothed', 'smoothed risk'], ['sw-risk', 'risk'], ['sw-pause', 'pause threshold'], ['sw-block', 'block threshold'],
      ['sw-call', 'classifier']]) {
      const s = document.createElement('span');
      s.className = `swatch ${cls}`;
      s.setAttribute('aria-hidden', 'true');
      legend.append(s, ` ${text} `);
    }
    figure.appendChild(legend);
    this.svg.addEventListener('pointermove', (ev) => this.pointAt(ev));
    this.svg.addEventListener('pointerleave', () => { if (document.activeElement !== this.svg) this.select(-1); });
    this.svg.addEventListener('focus', () => { if (this.selected < 0) this.select(this.readings.length - 1); });
    this.svg.addEventListener('blur', () => this.select(-1));
    this.svg.addEventListener('keydown', (ev) => this.key(ev));
    this.render();
  }

  addReading(e) {
    this.readings.push({ step: e.step, risk: e.risk, smoothed: e.smoothed_risk, decision: e.decision });
    this.render();
  }
  addPause(e) { this.pauses.push(e.step); this.render(); }
  // a classifier call mid-stream ("classifier") or at the end ("final_check": no step, drawn after the last token)
  addCall(e, final = false) {
    this.calls.push({ step: final ? null : e.step, verdict: e.verdict, score: e.score, final });
    this.render();
  }
  addNonfinite(e) { this.nonfinite.push({ step: e.step ?? null, what: e.what }); this.render(); }

  lastStep() {
    let s = 0;
    for (const r of this.readings) s = Math.max(s, r.step);
    for (const p of this.pauses) s = Math.max(s, p);
    for (const c of this.calls) if (c.step) s = Math.max(s, c.step);
    return s;
  }

  // scales: token steps from 0 to one probe interval past the last (at least 8 intervals), risk 0..1 upwards
  scales() {
    const every = this.probeEvery || 4;
    const span = Math.max(this.lastStep() + every, 8 * every);
    const x = (step) => M.left + ((W - M.left - M.right) * step) / span;
    const y = (v) => M.top + (H - M.top - M.bottom) * (1 - Math.min(1, Math.max(0, v)));
    return { x, y, span };
  }

  render() {
    const svg = this.svg;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const { x, y, span } = this.scales();
    const x0 = M.left, x1 = W - M.right;
    // axes and grid
    const grid = el('g', { class: 'grid' }, svg);
    for (const v of [0, 0.25, 0.5, 0.75, 1]) {
      el('line', { x1: x0, x2: x1, y1: y(v), y2: y(v), class: v === 0 ? 'axis' : 'gridline' }, grid);
      if (v === 0 || v === 0.5 || v === 1) el('text', { x: x0 - 5, y: y(v) + 3.5, class: 'tick', 'text-anchor': 'end' }, grid).textContent = String(v);
    }
    el('text', { x: x0, y: H - 8, class: 'tick', 'text-anchor': 'start' }, grid).textContent = '0';
    el('text', { x: x1, y: H - 8, class: 'tick', 'text-anchor': 'end' }, grid).textContent = `token ${span}`;
    // thresholds, labelled at the left (the newest readings are at the right); when the two lines
    // are close the lower one's label goes under its line
    const th = el('g', { class: 'thresholds' }, svg);
    const { pause, block } = this.thresholds;
    const finite = (v) => typeof v === 'number' && Number.isFinite(v);
    const close = finite(pause) && finite(block) && Math.abs(y(pause) - y(block)) < 11;
    const line = (v, cls, label, below) => {
      if (!finite(v)) return;
      el('line', { x1: x0, x2: x1, y1: y(v), y2: y(v), class: cls }, th);
      el('text', { x: x0 + 3, y: below ? y(v) + 10 : y(v) - 3, class: `th-label ${cls}`, 'text-anchor': 'start' }, th).textContent = `${label} ${fmt(v, 2)}`;
    };
    line(pause, 'th-pause', 'pause', close && pause <= block);
    line(block, 'th-block', 'block', close && block < pause);
    // pauses
    const marks = el('g', { class: 'marks' }, svg);
    for (const p of this.pauses) el('line', { x1: x(p), x2: x(p), y1: M.top, y2: H - M.bottom, class: 'pause-mark' }, marks);
    // risk (thin) and smoothed risk (thick, with a point per reading)
    const pts = (key) => this.readings.map((r) => `${x(r.step).toFixed(1)},${y(r[key]).toFixed(1)}`).join(' ');
    if (this.readings.length > 1) {
      el('polyline', { points: pts('risk'), class: 'risk-line' }, svg);
      el('polyline', { points: pts('smoothed'), class: 'smoothed-line' }, svg);
    }
    const dots = el('g', { class: 'points' }, svg);
    this.readings.forEach((r, i) => {
      el('circle', { cx: x(r.step), cy: y(r.smoothed), r: i === this.selected ? 4.5 : 2.8, class: `pt pt-${r.decision}${i === this.selected ? ' pt-selected' : ''}`,
        'data-step': r.step, 'data-risk': r.risk, 'data-smoothed': r.smoothed, 'data-decision': r.decision }, dots);
    });
    // classifier calls: a diamond at (step, score), coloured by verdict; labelled when there are
    // few, else only the last (hover for the others)
    const calls = el('g', { class: 'calls' }, svg);
    const labelAll = this.calls.length <= 3;
    for (const c of this.calls) {
      const cx = c.final ? Math.min(x1 - 4, x(this.lastStep()) + 6) : x(c.step);
      const cy = y(typeof c.score === 'number' ? c.score : 1);
      const d = 5;
      el('polygon', { points: `${cx},${cy - d} ${cx + d},${cy} ${cx},${cy + d} ${cx - d},${cy}`, class: `call call-${c.verdict}`,
        'data-step': c.step ?? 'final', 'data-verdict': c.verdict, 'data-score': c.score }, calls);
      if (labelAll || c === this.calls[this.calls.length - 1]) {
        const text = `${c.final ? 'final ' : ''}${c.verdict} ${fmt(c.score, 2)}`;
        const right = cx > (x0 + x1) / 2;
        el('text', { x: right ? cx - 7 : cx + 7, y: Math.max(M.top + 8, cy - 6), class: `call-label call-${c.verdict}`, 'text-anchor': right ? 'end' : 'start' },
          calls).textContent = text;
      }
    }
    for (const n of this.nonfinite) {
      const cx = n.step ? x(n.step) : x1 - 6, cy = y(1) + 6;
      el('path', { d: `M${cx - 4},${cy - 4}L${cx + 4},${cy + 4}M${cx + 4},${cy - 4}L${cx - 4},${cy + 4}`, class: 'nonfinite' }, marks);
    }
    // the selected reading: a cursor line
    if (this.selected >= 0 && this.readings[this.selected]) {
      const r = this.readings[this.selected];
      el('line', { x1: x(r.step), x2: x(r.step), y1: M.top, y2: H - M.bottom, class: 'cursor' }, svg);
    }
    svg.setAttribute('aria-label', this.summary());
    this.caption.textContent = this.readout();
  }

  summary() {
    const n = this.readings.length;
    if (!n) return 'Risk chart: no probe reading yet';
    const max = Math.max(...this.readings.map((r) => r.smoothed));
    return `Risk chart: ${n} probe reading${n === 1 ? '' : 's'}, highest smoothed risk ${fmt(max)}, ${this.pauses.length} pause${this.pauses.length === 1 ? '' : 's'}, ` +
      `${this.calls.length} classifier call${this.calls.length === 1 ? '' : 's'}. Focus and use the arrow keys to read each step.`;
  }

  readout() {
    const r = this.readings[this.selected];
    if (!r) {
      if (!this.readings.length) return 'No probe reading yet.';
      return `${this.readings.length} readings · hover or focus the chart for values`;
    }
    let s = `token ${r.step} · risk ${fmt(r.risk)} · smoothed ${fmt(r.smoothed)} · ${r.decision}`;
    const call = this.calls.find((c) => c.step === r.step);
    if (call) s += ` · classifier ${call.verdict} ${fmt(call.score)}`;
    return s;
  }

  select(i) {
    if (i === this.selected) return;
    this.selected = i;
    this.render();
  }

  pointAt(ev) {
    if (!this.readings.length) return;
    const box = this.svg.getBoundingClientRect();
    const vx = ((ev.clientX - box.left) / box.width) * W;
    const { x } = this.scales();
    let best = 0;
    this.readings.forEach((r, i) => { if (Math.abs(x(r.step) - vx) < Math.abs(x(this.readings[best].step) - vx)) best = i; });
    this.select(best);
  }

  key(ev) {
    const n = this.readings.length;
    if (!n) return;
    const moves = { ArrowLeft: -1, ArrowDown: -1, ArrowRight: 1, ArrowUp: 1 };
    let i = this.selected;
    if (ev.key in moves) i = Math.min(n - 1, Math.max(0, (i < 0 ? n - 1 : i) + moves[ev.key]));
    else if (ev.key === 'Home') i = 0;
    else if (ev.key === 'End') i = n - 1;
    else return;
    ev.preventDefault();
    this.select(i);
  }
}
