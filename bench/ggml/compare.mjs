// opencon's decode against llama.cpp's (ggml CPU backend) on the same checkpoint (Llama or Gemma 4), both
// measured the same way against the same ceilings: in every round each engine runs the headline
// decode (128-token prompt, a warm-up token, 64 timed greedy tokens) in its own process, with the
// bandwidth of bench_decoder --bandwidth (the 1 GiB read, best of 2 passes of 8 patterns; and the
// plain one-stream read) taken right before and right after it; the ratio uses the mean of the two.
// The engines' order rotates from round to round.
//
// usage (from a directory where node-llama-cpp is installed; see run_ggml_bench.sh):
//   node compare.mjs BENCH_DECODER MODEL_DIR GGUF_STEM [rounds] [threads]
// GGUF_STEM-TYPE.gguf for each TYPE of $GGUF_TYPES (default "bf16 q8_0"), with their .json sidecars, are
// MODEL_DIR written by gguf_from_safetensors.mjs; opencon reads MODEL_DIR's BF16 safetensors, as they
// are and quantized to q8 at load (--weights q8), and also times a 512-token prefill.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const [benchDecoder, modelDir, ggufStem, roundsArg = "3", threadsArg = "2"] = process.argv.slice(2);
if (!benchDecoder || !modelDir || !ggufStem) {
  console.error("usage: node compare.mjs BENCH_DECODER MODEL_DIR GGUF_STEM [rounds] [threads]");
  process.exit(2);
}
const rounds = Number(roundsArg), threads = Number(threadsArg);
const here = path.dirname(fileURLToPath(import.meta.url));

const lastJson = (out) => JSON.parse(out.trim().split("\n").filter((l) => l.startsWith("{")).at(-1));
const run = (cmd, args) => lastJson(execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 1 << 24 }));
const bandwidth = () => run(benchDecoder, ["--bandwidth", String(threads)]);

const opencon = (weights) => () => {
  const r = run(benchDecoder, [modelDir, String(threads), "--decode-only", "--prefill", "--weights", weights]);
  return { tps: r.decode_tps, bytes: r.decode_bytes_per_token, prefill: r.prefill512_tps };
};
const engines = [{ name: "opencon (BF16)", decode: opencon("stored") }, { name: "opencon (q8)", decode: opencon("q8") }];
for (const type of (process.env.GGUF_TYPES || "bf16 q8_0").split(/\s+/).filter(Boolean)) {
  const gguf = `${ggufStem}-${type}.gguf`;
  const side = JSON.parse(fs.readFileSync(`${gguf}.json`, "utf8"));
  engines.push({
    name: `llama.cpp (${type.toUpperCase()})`,
    decode: () => {
      const r = run(process.execPath, [path.join(here, "decode_llamacpp.mjs"), gguf, String(threads)]);
      return { tps: r.decode_tokens_per_s, bytes: side.decode_bytes_per_token };
    },
  });
}

const rows = engines.map(() => []);
for (let r = 0; r < rounds; r++) {
  for (let j = 0; j < engines.length; j++) {
    const k = (j + r) % engines.length, e = engines[k];
    const before = bandwidth(), d = e.decode(), after = bandwidth();
    const bw = (before.bandwidth_gbs + after.bandwidth_gbs) / 2, plain = (before.plain_bandwidth_gbs + after.plain_bandwidth_gbs) / 2;
    const eff = (d.tps * d.bytes) / 1e9;
    rows[k].push({ tps: d.tps, bytes: d.bytes, eff, bw, plain, frac: eff / bw, pfrac: eff / plain, prefill: d.prefill });
    console.error(`round ${r + 1}/${rounds} ${e.name}: ${d.tps.toFixed(2)} tok/s x ${(d.bytes / 1e9).toFixed(3)} GB = ${eff.toFixed(1)} GB/s; ` +
      `1 GiB read ${bw.toFixed(1)} GB/s (${(100 * eff / bw).toFixed(0)} %), plain read ${plain.toFixed(1)} GB/s (${(100 * eff / plain).toFixed(0)} %)`);
  }
}

const median = (a) => { const s = [...a].sort((x, y) => x - y), n = s.length; return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2; };
console.log(`| engine | GB read per token | decode tok/s (median of ${rounds}; min-max) | GB/s streamed | % of the 1 GiB read (median; min-max) | % of the plain read (median) | prefill 512 tok/s (median) |`);
console.log("|---|---|---|---|---|---|---|");
const result = [];
engines.forEach((e, k) => {
  const R = rows[k], pct = (x) => (100 * x).toFixed(0);
  const fr = R.map((x) => x.frac);
  const tps = R.map((x) => x.tps), pre = R.map((x) => x.prefill).filter((x) => x > 0);
  console.log(`| ${e.name} | ${(R[0].bytes / 1e9).toFixed(3)} | ${median(tps).toFixed(2)} (${Math.min(...tps).toFixed(2)}-${Math.max(...tps).toFixed(2)}) | ` +
    `${median(R.map((x) => x.eff)).toFixed(1)} | ${pct(median(fr))} % (${pct(Math.min(...fr))}-${pct(Math.max(...fr))} %) | ${pct(median(R.map((x) => x.pfrac)))} % | ` +
    `${pre.length ? median(pre).toFixed(1) : "-"} |`);
  result.push({ engine: e.name, rounds: R });
});
if (process.env.COMPARE_JSON) fs.writeFileSync(process.env.COMPARE_JSON, JSON.stringify({ threads, model: modelDir, engines: result }, null, 1) + "\n");
