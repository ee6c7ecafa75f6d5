// transformers.js side of the tokenizer benchmark: same corpus, same tokenizer.json files,
// one text per line, add_special_tokens=false, one thread. Prints one JSON line per tokenizer.
// usage: node tokenizer_js.mjs CORPUS NAME=tokenizer.json ...   (needs @huggingface/transformers)
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(path.join(process.cwd(), 'x.js'));
const { PreTrainedTokenizer } = await import(require.resolve('@huggingface/transformers'));
const [corpus, ...specs] = process.argv.slice(2);
const text = fs.readFileSync(corpus, 'utf8');
const lines = text.split('\n');
if (lines[lines.length - 1] === '') lines.pop();
const bytes = Buffer.byteLength(text, 'utf8');
for (const spec of specs) {
  const [name, file] = spec.split('=');
  const t0 = performance.now();
  const tok = new PreTrainedTokenizer(JSON.parse(fs.readFileSync(file, 'utf8')), {});
  const load = (performance.now() - t0) / 1000;
  let best = Infinity, first = 0, tokens = 0;
  for (let rep = 0; rep < 2; rep++) {
    const t1 = performance.now();
    tokens = 0;
    for (const l of lines) tokens += tok.encode(l, { add_special_tokens: false }).length;
    const dt = (performance.now() - t1) / 1000;
    best = Math.min(best, dt);
    if (rep === 0) first = dt;
  }
  console.log(JSON.stringify({ tokenizer: name, impl: 'transformers.js', bytes, lines: lines.length, tokens, seconds: +best.toFixed(3), mb_per_s: +(bytes / best / 1e6).toFixed(2), first_pass_mb_per_s: +(bytes / first / 1e6).toFixed(2), load_s: +load.toFixed(2) }));
}
