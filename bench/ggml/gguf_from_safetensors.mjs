// Writes a Llama-architecture GGUF (v3) from a Llama-shaped Hugging Face checkpoint directory
// (config.json + one model.safetensors with BF16 matrices), so that llama.cpp's ggml can decode the
// same bytes opencon decodes. For speed comparison only: the q/k rows are not permuted into
// llama.cpp's rope layout and the vocabulary is a placeholder, so its outputs mean nothing.
//
// Matrices are written as BF16 (the checkpoint's bytes), F16 or Q8_0 (ggml's 8-bit blocks: 32 int8
// and one F16 scale); vectors as F32. OUT.gguf.json gets the bytes decode reads per token.
//
// usage: node gguf_from_safetensors.mjs MODEL_DIR OUT.gguf [bf16|f16|q8_0]
import fs from "node:fs";
import path from "node:path";

const [dir, out, wantType = "bf16"] = process.argv.slice(2);
if (!dir || !out || !["bf16", "f16", "q8_0"].includes(wantType)) {
  console.error("usage: node gguf_from_safetensors.mjs MODEL_DIR OUT.gguf [bf16|f16|q8_0]");
  process.exit(2);
}
const cfg = JSON.parse(fs.readFileSync(path.join(dir, "config.json"), "utf8"));
if (cfg.model_type !== "llama") throw new Error(`${dir}/config.json: model_type ${cfg.model_type}, only llama is written`);

// safetensors: u64 header length, JSON header, data
const stPath = path.join(dir, "model.safetensors");
const fd = fs.openSync(stPath, "r");
const lenBuf = Buffer.alloc(8);
fs.readSync(fd, lenBuf, 0, 8, 0);
const hlen = Number(lenBuf.readBigUInt64LE(0));
const hbuf = Buffer.alloc(hlen);
fs.readSync(fd, hbuf, 0, hlen, 8);
const header = JSON.parse(hbuf.toString("utf8"));
const dataStart = 8 + hlen;

const GGML = { F32: 0, F16: 1, Q8_0: 8, BF16: 30 };
const matType = { bf16: GGML.BF16, f16: GGML.F16, q8_0: GGML.Q8_0 }[wantType];
const typeBytes = (type, n) => (type === GGML.F32 ? 4 * n : type === GGML.Q8_0 ? (n / 32) * 34 : 2 * n);

function ggufName(hf) {
  const fixed = { "model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight" };
  if (fixed[hf]) return fixed[hf];
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hf);
  if (!m) throw new Error(`${stPath}: tensor ${hf} has no GGUF name`);
  const map = {
    "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
  };
  if (!map[m[2]]) throw new Error(`${stPath}: tensor ${hf} has no GGUF name`);
  return `blk.${m[1]}.${map[m[2]]}`;
}

// F32 (as its bits) -> F16, round to nearest even
function f32BitsToF16(x) {
  const sign = (x >>> 16) & 0x8000, exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 255) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e, half = 1 << (shift - 1), rem = mant & ((1 << shift) - 1);
    let h = mant >>> shift;
    if (rem > half || (rem === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;
  return sign | h;
}
let lut = null;
function f16Lut() {
  if (!lut) { lut = new Uint16Array(65536); for (let i = 0; i < 65536; i++) lut[i] = f32BitsToF16((i << 16) >>> 0); }
  return lut;
}

// Q8_0: per 32 consecutive values of a row, d = max|x| / 127 (stored as F16), q = round(x / d)
const f32v = new Float32Array(1), f32b = new Uint32Array(f32v.buffer);
function quantQ8_0(u16) {
  const nb = u16.length / 32, o = Buffer.alloc(nb * 34), x = new Float32Array(32), xb = new Uint32Array(x.buffer);
  for (let b = 0; b < nb; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) { xb[j] = u16[b * 32 + j] << 16; amax = Math.max(amax, Math.abs(x[j])); }
    f32v[0] = amax / 127;
    const d = f32v[0], id = d ? 1 / d : 0;
    o.writeUInt16LE(f32BitsToF16(f32b[0]), b * 34);
    for (let j = 0; j < 32; j++) { const v = x[j] * id; o.writeInt8(Math.sign(v) * Math.round(Math.abs(v)), b * 34 + 2 + j); }
  }
  return o;
}

const tensors = Object.entries(header).filter(([k]) => k !== "__metadata__").map(([name, t]) => {
  if (t.dtype !== "BF16") throw new Error(`${stPath}: tensor ${name} is ${t.dtype}, BF16 expected`);
  const vector = t.shape.length === 1;
  const type = vector ? GGML.F32 : matType;
  const n = t.shape.reduce((a, b) => a * b, 1);
  if (type === GGML.Q8_0 && t.shape[t.shape.length - 1] % 32) throw new Error(`${stPath}: tensor ${name}: rows of ${t.shape.at(-1)} are not whole Q8_0 blocks`);
  return { hf: name, name: ggufName(name), shape: t.shape, off: t.data_offsets, type, nbytes: typeBytes(type, n) };
});

// GGUF writer
const ALIGN = 32;
const parts = [];
const u32 = (v) => { const b = Buffer.alloc(4); b.writeUInt32LE(v); parts.push(b); };
const u64 = (v) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); parts.push(b); };
const f32 = (v) => { const b = Buffer.alloc(4); b.writeFloatLE(v); parts.push(b); };
const str = (s) => { const b = Buffer.from(s, "utf8"); u64(b.length); parts.push(b); };
const T = { U32: 4, I32: 5, F32: 6, STRING: 8, ARRAY: 9 };
const kvs = [];
const kv = (key, fn) => kvs.push([key, fn]);
const kvU32 = (k, v) => kv(k, () => { u32(T.U32); u32(v); });
const kvF32 = (k, v) => kv(k, () => { u32(T.F32); f32(v); });
const kvStr = (k, v) => kv(k, () => { u32(T.STRING); str(v); });
const kvStrArr = (k, a) => kv(k, () => { u32(T.ARRAY); u32(T.STRING); u64(a.length); for (const s of a) str(s); });
const kvI32Arr = (k, a) => kv(k, () => { u32(T.ARRAY); u32(T.I32); u64(a.length); for (const v of a) { const b = Buffer.alloc(4); b.writeInt32LE(v); parts.push(b); } });

const hd = cfg.head_dim ?? cfg.hidden_size / cfg.num_attention_heads;
kvStr("general.architecture", "llama");
kvStr("general.name", "opencon random llama (speed comparison only)");
kvU32("general.alignment", ALIGN);
kvU32("llama.context_length", cfg.max_position_embeddings);
kvU32("llama.embedding_length", cfg.hidden_size);
kvU32("llama.block_count", cfg.num_hidden_layers);
kvU32("llama.feed_forward_length", cfg.intermediate_size);
kvU32("llama.attention.head_count", cfg.num_attention_heads);
kvU32("llama.attention.head_count_kv", cfg.num_key_value_heads);
kvU32("llama.attention.key_length", hd);
kvU32("llama.attention.value_length", hd);
kvU32("llama.rope.dimension_count", hd);
kvF32("llama.rope.freq_base", cfg.rope_theta ?? 10000);
kvF32("llama.attention.layer_norm_rms_epsilon", cfg.rms_norm_eps);
kvU32("llama.vocab_size", cfg.vocab_size);
// Placeholder byte-level BPE vocabulary: the 256 byte symbols, then filler tokens.
const byteSyms = [];
for (let b = 0; b < 256; b++) {
  const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  byteSyms.push(printable ? b : null);
}
let extra = 0;
const tokens = byteSyms.map((b) => String.fromCodePoint(b ?? 256 + extra++));
for (let i = tokens.length; i < cfg.vocab_size; i++) tokens.push(`<x${i}>`);
kvStr("tokenizer.ggml.model", "gpt2");
kvStr("tokenizer.ggml.pre", "default");
kvStrArr("tokenizer.ggml.tokens", tokens);
kvI32Arr("tokenizer.ggml.token_type", tokens.map(() => 1));
kvStrArr("tokenizer.ggml.merges", ["a b"]);
kvU32("tokenizer.ggml.bos_token_id", 0);
kvU32("tokenizer.ggml.eos_token_id", 1);

u32(0x46554747); // "GGUF"
u32(3);
u64(tensors.length);
u64(kvs.length);
for (const [k, fn] of kvs) { str(k); fn(); }
let off = 0;
for (const t of tensors) {
  str(t.name);
  u32(t.shape.length);
  for (const d of [...t.shape].reverse()) u64(d); // ggml order: fastest dimension first
  u32(t.type);
  u64(off);
  t.gguf_off = off;
  off += Math.ceil(t.nbytes / ALIGN) * ALIGN;
}
let head = Buffer.concat(parts);
const pad = (ALIGN - (head.length % ALIGN)) % ALIGN;
head = Buffer.concat([head, Buffer.alloc(pad)]);

const tmp = `${out}.tmp`;
const ofd = fs.openSync(tmp, "w");
fs.writeSync(ofd, head);
let pos = head.length;
for (const t of tensors) {
  const n = t.off[1] - t.off[0];
  const src = Buffer.alloc(n);
  fs.readSync(fd, src, 0, n, dataStart + t.off[0]);
  const u16 = new Uint16Array(src.buffer, src.byteOffset, n / 2);
  let dst;
  if (t.type === GGML.F32) {
    const o = new Uint32Array(u16.length);
    for (let i = 0; i < u16.length; i++) o[i] = u16[i] << 16;
    dst = Buffer.from(o.buffer);
  } else if (t.type === GGML.F16) {
    const L = f16Lut(), o = new Uint16Array(u16.length);
    for (let i = 0; i < u16.length; i++) o[i] = L[u16[i]];
    dst = Buffer.from(o.buffer);
  } else if (t.type === GGML.Q8_0) dst = quantQ8_0(u16);
  else dst = src;
  fs.writeSync(ofd, dst, 0, dst.length, head.length + t.gguf_off);
  pos = Math.max(pos, head.length + t.gguf_off + Math.ceil(dst.length / ALIGN) * ALIGN);
}
fs.ftruncateSync(ofd, pos);
fs.closeSync(ofd);
fs.renameSync(tmp, out);
// Bytes a decoded token reads, counted as opencon counts them: every matrix it multiplies (the
// embedding table only as a tied LM head; the one row a token gathers and the norms are left out).
const tied = !header["lm_head.weight"];
const perToken = tensors.filter((t) => t.shape.length === 2 && (tied || t.name !== "token_embd.weight")).reduce((a, t) => a + t.nbytes, 0);
fs.writeFileSync(`${out}.json`, JSON.stringify({ matrices: wantType, decode_bytes_per_token: perToken, tied_embeddings: tied }) + "\n");
console.log(`wrote ${out}: ${tensors.length} tensors, ${(pos / 1e9).toFixed(2)} GB, matrices ${wantType}, ${(perToken / 1e9).toFixed(3)} GB read per decoded token`);
