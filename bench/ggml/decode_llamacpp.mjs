// Decode speed of llama.cpp (ggml's CPU backend, as node-llama-cpp's prebuilt binaries ship it) on a
// GGUF: the same measurement as bench_decoder's headline decode — a 128-token prompt, one warm-up
// token, then 64 greedy tokens timed — printed as JSON.
//
// usage: node decode_llamacpp.mjs MODEL.gguf [threads]
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

const [modelPath, threadsArg = "2"] = process.argv.slice(2);
if (!modelPath) { console.error("usage: node decode_llamacpp.mjs MODEL.gguf [threads]"); process.exit(2); }
const threads = Number(threadsArg);

const llama = await getLlama({ gpu: false, build: "never", maxThreads: threads, logLevel: LlamaLogLevel.error });
// locked in memory, as opencon's bench_decoder and bench_serve lock theirs: this VM pages out file pages it sees
// little use of (DAMON), which would put disk reads into decode steps
const model = await llama.loadModel({ modelPath, gpuLayers: 0, useMmap: true, useMlock: true });
const ctx = await model.createContext({ contextSize: 1024, batchSize: 512, threads: { ideal: threads, min: threads }, flashAttention: false });
const seq = ctx.getSequence();

// The prompt: bench_decoder's 128 ids.
const meta = model.fileInfo.metadata, V = meta[meta.general.architecture].vocab_size;
const prompt = Array.from({ length: 128 }, (_, i) => ((i * 7919 + 13) % (V - 10)) + 5);

const NEW = 64;
let n = 0, t0 = 0;
const t_start = performance.now();
for await (const tok of seq.evaluate(prompt, { temperature: 0 })) {
  void tok;
  // token 0 comes out of the prompt, token 1 is the warm-up step: the clock starts after it
  if (n === 1) t0 = performance.now();
  if (n === NEW + 1) break;
  n++;
}
const t1 = performance.now();
if (n !== NEW + 1) throw new Error(`${modelPath}: generation stopped after ${n} tokens, ${NEW + 2} needed`);
const decode_tps = NEW / ((t1 - t0) / 1000);
console.log(JSON.stringify({ engine: "llama.cpp (node-llama-cpp prebuilt)", model: modelPath, threads: ctx.currentThreads ?? threads,
  prompt_tokens: prompt.length, new_tokens: NEW, decode_tokens_per_s: decode_tps, total_s: (t1 - t_start) / 1000 }));
await ctx.dispose();
await model.dispose();
await llama.dispose();
