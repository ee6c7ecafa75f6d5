#!/usr/bin/env bash
# Serving throughput: the continuous-batching engine (bench_serve) on a Gemma-4-E2B-shaped random
# checkpoint, then llama.cpp decoding the same weights (BF16, or Q8_0 beside q8) with the same numbers of parallel
# sequences (node-llama-cpp's batched sequences), one after the other (each within memory).
# usage: bench/run_serve_bench.sh BUILD_DIR E2B_MODEL_DIR CLASSIFIER_DIR [THREADS] [NEW_TOKENS] [stored|q8]
#   E2B_MODEL_DIR: opencon random-model --config ../shared/fixtures/configs/gemma-4-E2B-it.config.json --out DIR
#   CLASSIFIER_DIR: a random ModernBERT-base (random-model --config ModernBERT-base.config.json) with the
#   ModernBERT tokenizer.json (tests/fixtures/tokenizers/modernbert), or - for none
#   The GGUF copy goes to BUILD_DIR/ggmlbench (as bench/run_ggml_bench.sh); LLAMACPP=0 skips llama.cpp.
#   ROUNDS=R: rounds of 1, 2, 4, 8 streams (default 3; the ratios are taken within each round).
set -euo pipefail
build=$(realpath "$1"); weights=$(realpath "$2"); cls=${3:--}; threads=${4:-2}; new=${5:-64}; wmode=${6:-stored}
[ "$cls" = - ] || cls=$(realpath "$cls")
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/oc_serve_bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/model" "$work/probe"
ln -s "$weights/config.json" "$weights/model.safetensors" "$work/model/"
# the real Gemma 3 tokenizer (262,144 ids, the E2B vocabulary): detokenization costs what it costs for real
cp "$build/tokenizers/gemma3/tokenizer.json" "$work/model/"
cp "$here/tests/fixtures/tiny-chat/gemma4/tokenizer_config.json" "$here/tests/fixtures/tokenizers/gemma4/chat_template.jinja" "$work/model/"
hidden=$(python3 -c "import json,sys; c=json.load(open(sys.argv[1])); print(c.get('text_config', c)['hidden_size'])" "$weights/config.json")
# a probe that never pauses (bias -10): every stream runs to its end; its readings still cost what they cost
python3 - "$work/probe/probe.safetensors" "$hidden" <<'PY'
import json, random, struct, sys
path, h = sys.argv[1], int(sys.argv[2])
random.seed(0)
w = [random.uniform(-1, 1) * 1e-4 for _ in range(h)]
hdr = {"head.weight": {"dtype": "F32", "shape": [1, h], "data_offsets": [0, 4 * h]},
       "head.bias": {"dtype": "F32", "shape": [1], "data_offsets": [4 * h, 4 * h + 4]}}
hb = json.dumps(hdr).encode()
hb += b" " * ((8 - len(hb) % 8) % 8)
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(hb)) + hb + struct.pack("<%df" % h, *w) + struct.pack("<f", -10.0))
PY
cat > "$work/probe/config.json" <<JSON
{"model_id": "$work/model", "layer": -4, "hidden_size": $hidden, "threshold": 0.65, "pause_threshold": 0.75,
 "probe_every_n_tokens": 4, "smoothing_window": 4, "use_chat_template": false}
JSON
"$build/bench/bench_serve" "$work/model" "$work/probe/probe.safetensors" "$cls" "$threads" "$new" 128 "$wmode" "${ROUNDS:-3}"
[ "${LLAMACPP:-1}" = 0 ] && exit 0
# llama.cpp: the same weights as GGUF (BF16 beside stored weights, Q8_0 beside q8), S parallel
# sequences decoding together
gtype=bf16
[ "$wmode" = q8 ] && gtype=q8_0
gg="$build/ggmlbench"
mkdir -p "$gg"
(cd "$gg" && [ -d node_modules/node-llama-cpp ] || {
  cp "$here/bench/ggml/package.json" . && npm install --omit=optional --ignore-scripts --no-audit --no-fund >/dev/null; })
stem="$gg/$(basename "$weights")"
[ -f "$stem-$gtype.gguf.json" ] || node "$here/bench/ggml/gguf_from_safetensors.mjs" "$weights" "$stem-$gtype.gguf" "$gtype"
cp "$here/bench/ggml/batch_llamacpp.mjs" "$gg/"
for s in 1 2 4 8; do (cd "$gg" && node batch_llamacpp.mjs "$stem-$gtype.gguf" "$threads" "$s" "$new" 128); done
