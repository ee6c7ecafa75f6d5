// Writes a GGUF (v3) from a Hugging Face checkpoint directory (config.json + one model.safetensors
// with BF16 tensors) of a Llama or a Gemma 4 text model, so that llama.cpp's ggml can decode the same
// bytes opencon decodes. For speed comparison only: tensors are renamed and laid out as llama.cpp
// loads them, but their values are not transformed the way llama.cpp's converter transforms them
// (Llama's q/k rows are not permuted into its rope layout, Gemma 4's rope frequency factors are
// placeholders) and the vocabulary is a placeholder, so llama.cpp's tokens mean nothing.
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
const top = JSON.parse(fs.readFileSync(path.join(dir, "config.json"), "utf8"));
const cfg = top.text_config ?? top;

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

// Per architecture: the tensor prefix, HF -> GGUF names of the model-level and the per-layer
// tensors (null: not written), and the GGUF key prefix.
const layerCommon = {
  "input_layernorm.weight": "attn_norm.weight",
  "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
  "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
  "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
};
const ARCH = {
  llama: {
    gguf: "llama", prefix: "model.",
    model: { "embed_tokens.weight": "token_embd.weight", "norm.weight": "output_norm.weight" },
    layer: { ...layerCommon, "post_attention_layernorm.weight": "ffn_norm.weight" },
  },
  gemma4: {
    gguf: "gemma4", prefix: "model.language_model.",
    model: {
      "embed_tokens.weight": "token_embd.weight", "norm.weight": "output_norm.weight",
      "embed_tokens_per_layer.weight": "per_layer_token_embd.weight",
      "per_layer_model_projection.weight": "per_layer_model_proj.weight",
      "per_layer_projection_norm.weight": "per_layer_proj_norm.weight",
    },
    layer: {
      ...layerCommon,
      "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight",
      "post_attention_layernorm.weight": "post_attention_norm.weight", "pre_feedforward_layernorm.weight": "ffn_norm.weight",
      "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
      "per_layer_input_gate.weight": "inp_gate.weight", "per_layer_projection.weight": "proj.weight",
      "post_per_layer_input_norm.weight": "post_norm.weight", "layer_scalar": "layer_output_scale.weight",
    },
  },
};
const archKey = { llama: "llama", gemma4: "gemma4", gemma4_text: "gemma4" }[cfg.model_type];
if (!archKey) throw new Error(`${dir}/config.json: model_type ${cfg.model_type}; written: llama, gemma4, gemma4_text`);
const arch = ARCH[archKey];
const nLayers = cfg.num_hidden_layers;
const firstShared = nLayers - (cfg.num_kv_shared_layers ?? 0);

function ggufName(hf) {
  const prefix = top.text_config ? arch.prefix : arch.prefix.replace("language_model.", "");
  if (hf === "lm_head.weight") return "output.weight";
  if (!hf.startsWith(prefix)) throw new Error(`${stPath}: tensor ${hf} has no GGUF name`);
  const rest = hf.slice(prefix.length);
  if (arch.model[rest]) return arch.model[rest];
  const m = /^layers\.(\d+)\.(.+)$/.exec(rest);
  if (!m || !arch.layer[m[2]]) throw new Error(`${stPath}: tensor ${hf} has no GGUF name`);
  // layers that read another layer's KV cache have no K/V of their own in llama.cpp's Gemma 4
  if (Number(m[1]) >= firstShared && /^self_attn\.(k_proj|v_proj|k_norm)\./.test(m[2])) return null;
  return `blk.${m[1]}.${arch.layer[m[2]]}`;
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

const tensors = Object.entries(header).filter(([k]) => k !== "__metadata__").flatMap(([name, t]) => {
  const gname = ggufName(name);
  if (gname === null) return [];
  if (t.dtype !== "BF16") throw new Error(`${stPath}: tensor ${name} is ${t.dtype}, BF16 expected`);
  const vector = t.shape.length === 1;
  const type = vector ? GGML.F32 : matType;
  const n = t.shape.reduce((a, b) => a * b, 1);
  if (type === GGML.Q8_0 && t.shape[t.shape.length - 1] % 32) throw new Error(`${stPath}: tensor ${name}: rows of ${t.shape.at(-1)} are not whole Q8_0 blocks`);
  return [{ hf: name, name: gname, shape: t.shape, off: t.data_offsets, type, nbytes: typeBytes(type, n) }];
});
if (archKey === "gemma4") {
  // The full-attention layers' rope frequency factors (llama.cpp's form of proportional rope):
  // placeholders, 1 for the rotated quarter of the pairs and 1e30 (no rotation) for the rest.
  const half = cfg.global_head_dim / 2, rot = Math.floor((cfg.rope_parameters?.full_attention?.partial_rotary_factor ?? 1) * half);
  const f = new Float32Array(half).map((_, i) => (i < rot ? 1 : 1e30));
  tensors.push({ hf: null, name: "rope_freqs.weight", shape: [half], type: GGML.F32, nbytes: 4 * half, make: () => Buffer.from(f.buffer) });
}

// GGUF writer
const ALIGN = 32;
const parts = [];
const u32 = (v) => { const b = Buffer.alloc(4); b.writeUInt32LE(v); parts.push(b); };
const u64 = (v) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); parts.push(b); };
const f32 = (v) => { const b = Buffer.alloc(4); b.writeFloatLE(v); parts.push(b); };
const str = (s) => { const b = Buffer.from(s, "utf8"); u64(b.length); parts.push(b); };
const T = { U32: 4, I32: 5, F32: 6, BOOL: 7, STRING: 8, ARRAY: 9 };
const kvs = [];
const kv = (key, fn) => kvs.push([key, fn]);
const kvU32 = (k, v) => kv(k, () => { u32(T.U32); u32(v); });
const kvF32 = (k, v) => kv(k, () => { u32(T.F32); f32(v); });
const kvStr = (k, v) => kv(k, () => { u32(T.STRING); str(v); });
const kvStrArr = (k, a) => kv(k, () => { u32(T.ARRAY); u32(T.STRING); u64(a.length); for (const s of a) str(s); });
const kvArr = (k, type, size, a, put) => kv(k, () => { u32(T.ARRAY); u32(type); u64(a.length); for (const v of a) { const b = Buffer.alloc(size); put(b, v); parts.push(b); } });
const kvI32Arr = (k, a) => kvArr(k, T.I32, 4, a, (b, v) => b.writeInt32LE(v));
const kvU32Arr = (k, a) => kvArr(k, T.U32, 4, a, (b, v) => b.writeUInt32LE(v));
const kvBoolArr = (k, a) => kvArr(k, T.BOOL, 1, a, (b, v) => b.writeUInt8(v ? 1 : 0));

const A = arch.gguf;
kvStr("general.architecture", A);
kvStr("general.name", `opencon random ${A} (speed comparison only)`);
kvU32("general.alignment", ALIGN);
kvU32(`${A}.context_length`, cfg.max_position_embeddings);
kvU32(`${A}.embedding_length`, cfg.hidden_size);
kvU32(`${A}.block_count`, nLayers);
kvU32(`${A}.attention.head_count`, cfg.num_attention_heads);
kvU32(`${A}.attention.head_count_kv`, cfg.num_key_value_heads);
kvF32(`${A}.attention.layer_norm_rms_epsilon`, cfg.rms_norm_eps);
kvU32(`${A}.vocab_size`, cfg.vocab_size);
if (archKey === "llama") {
  const hd = cfg.head_dim ?? cfg.hidden_size / cfg.num_attention_heads;
  kvU32(`${A}.feed_forward_length`, cfg.intermediate_size);
  kvU32(`${A}.attention.key_length`, hd);
  kvU32(`${A}.attention.value_length`, hd);
  kvU32(`${A}.rope.dimension_count`, hd);
  kvF32(`${A}.rope.freq_base`, cfg.rope_theta ?? 10000);
} else {
  const sliding = cfg.layer_types.map((t) => t === "sliding_attention");
  const wide = (i) => cfg.use_double_wide_mlp && i >= firstShared;
  kvU32Arr(`${A}.feed_forward_length`, sliding.map((_, i) => cfg.intermediate_size * (wide(i) ? 2 : 1)));
  kvU32(`${A}.attention.key_length`, cfg.global_head_dim);
  kvU32(`${A}.attention.value_length`, cfg.global_head_dim);
  kvU32(`${A}.attention.key_length_swa`, cfg.head_dim);
  kvU32(`${A}.attention.value_length_swa`, cfg.head_dim);
  kvU32(`${A}.rope.dimension_count`, cfg.global_head_dim);
  kvU32(`${A}.rope.dimension_count_swa`, cfg.head_dim);
  kvF32(`${A}.rope.freq_base`, cfg.rope_parameters.full_attention.rope_theta);
  kvF32(`${A}.rope.freq_base_swa`, cfg.rope_parameters.sliding_attention.rope_theta);
  kvU32(`${A}.attention.sliding_window`, cfg.sliding_window);
  kvBoolArr(`${A}.attention.sliding_window_pattern`, sliding);
  kvU32(`${A}.attention.shared_kv_layers`, cfg.num_kv_shared_layers ?? 0);
  kvU32(`${A}.embedding_length_per_layer_input`, cfg.hidden_size_per_layer_input);
  if (cfg.final_logit_softcapping) kvF32(`${A}.final_logit_softcapping`, cfg.final_logit_softcapping);
}
// Placeholder byte-level BPE vocabulary: the 256 byte symbols, then filler tokens.
const tokens = [];
for (let b = 0, extra = 0; b < 256; b++) {
  const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  tokens.push(String.fromCodePoint(printable ? b : 256 + extra++));
}
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
  pos = Math.max(pos, head.length + t.gguf_off + Math.ceil(t.nbytes / ALIGN) * ALIGN);
  if (t.make) {
    fs.writeSync(ofd, t.make(), 0, t.nbytes, head.length + t.gguf_off);
    continue;
  }
  // in pieces of 256 MiB (whole Q8_0 blocks): a tensor can exceed a Node buffer's 4 GiB
  const n = t.off[1] - t.off[0], CH = 1 << 28;
  let outOff = head.length + t.gguf_off;
  for (let o = 0; o < n; o += CH) {
    const len = Math.min(CH, n - o), src = Buffer.alloc(len);
    fs.readSync(fd, src, 0, len, dataStart + t.off[0] + o);
    const u16 = new Uint16Array(src.buffer, src.byteOffset, len / 2);
    let dst;
    if (t.type === GGML.F32) {
      const w = new Uint32Array(u16.length);
      for (let i = 0; i < u16.length; i++) w[i] = u16[i] << 16;
      dst = Buffer.from(w.buffer);
    } else if (t.type === GGML.F16) {
      const L = f16Lut(), w = new Uint16Array(u16.length);
      for (let i = 0; i < u16.length; i++) w[i] = L[u16[i]];
      dst = Buffer.from(w.buffer);
    } else if (t.type === GGML.Q8_0) dst = quantQ8_0(u16);
    else dst = src;
    fs.writeSync(ofd, dst, 0, dst.length, outOff);
    outOff += dst.length;
  }
}
fs.ftruncateSync(ofd, pos);
fs.closeSync(ofd);
fs.renameSync(tmp, out);
// Bytes a decoded token reads, counted as opencon counts them: every matrix it multiplies (the
// embedding table only as a tied LM head; the rows a token gathers and the norms are left out).
const tied = !header["lm_head.weight"];
const perToken = tensors
  .filter((t) => t.shape.length === 2 && t.name !== "per_layer_token_embd.weight" && (tied || t.name !== "token_embd.weight"))
  .reduce((a, t) => a + t.nbytes, 0);
fs.writeFileSync(`${out}.json.tmp`, JSON.stringify({ matrices: wantType, decode_bytes_per_token: perToken, tied_embeddings: tied }) + "\n");
fs.renameSync(`${out}.json.tmp`, `${out}.json`);
console.log(`wrote ${out}: ${tensors.length} tensors, ${(pos / 1e9).toFixed(2)} GB, matrices ${wantType}, ${(perToken / 1e9).toFixed(3)} GB read per decoded token`);
