// Aggregate decode speed of llama.cpp (node-llama-cpp's prebuilt CPU build) with S sequences decoding
// together in one context (node-llama-cpp batches the sequences' tokens into one llama_decode), the
// counterpart of bench_serve's "streams" rows: S prompts of PROMPT tokens, NEW greedy tokens each;
// the clock runs from the moment every sequence has its first token (all prompts read) to the end.
//
// usage: node batch_llamacpp.mjs MODEL.gguf [threads] [sequences] [new] [prompt]
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

const [modelPath, threadsArg = "2", seqArg = "1", newArg = "64", promptArg = "128"] = process.argv.slice(2);
if (!modelPath) { console.error("usage: node batch_llamacpp.mjs MODEL.gguf [threads] [sequences] [new] [prompt]"); process.exit(2); }
const threads = Number(threadsArg), S = Number(seqArg), NEW = Number(newArg), P = Number(promptArg);

const llama = await getLlama({ gpu: false, build: "never", maxThreads: threads, logLevel: LlamaLogLevel.error });
// locked in memory, as opencon's bench_decoder and bench_serve lock theirs: this VM pages out file pages it sees
// little use of (DAMON), which would put disk reads into decode steps
const model = await llama.loadModel({ modelPath, gpuLayers: 0, useMmap: true, useMlock: true });
const ctx = await model.createContext({ contextSize: P + NEW + 16, sequences: S, batchSize: 512, threads: { ideal: threads, min: threads },
  flashAttention: false });
const meta = model.fileInfo.metadata, V = meta[meta.general.architecture].vocab_size;

let firstAll = 0, started = 0, afterFirst = 0;
const seqs = Array.from({ length: S }, () => ctx.getSequence());
const t_start = performance.now();
await Promise.all(seqs.map(async (seq, k) => {
  const prompt = Array.from({ length: P }, (_, i) => (((k * 131 + i) * 7919 + 13) % (V - 10)) + 5);
  let n = 0;
  for await (const tok of seq.evaluate(prompt, { temperature: 0 })) {
    void tok;
    if (n === 0 && ++started === S) firstAll = performance.now();
    else if (n > 0 && firstAll) afterFirst++;
    if (++n === NEW) break;
  }
}));
const t1 = performance.now();
console.log(JSON.stringify({ bench: "serve", engine: "llama.cpp (node-llama-cpp prebuilt)", what: "streams", streams: S, threads,
  decode_tokens_per_s: afterFirst / ((t1 - firstAll) / 1000), end_to_end_tokens_per_s: (S * NEW) / ((t1 - t_start) / 1000), tokens: S * NEW }));
await ctx.dispose();
await model.dispose();
await llama.dispose();
