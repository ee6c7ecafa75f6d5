#!/usr/bin/env bash
# Guard overhead on a Gemma-4-E2B-shaped random checkpoint through the real CLI (benchmark-latency):
# baseline decode vs probe-only vs full guard (probe + classifier + final check).
# usage: bench/run_latency_bench.sh BUILD_DIR E2B_MODEL_DIR CLASSIFIER_DIR [MAX_NEW_TOKENS] [PAUSE_THRESHOLD]
#   CLASSIFIER_DIR: e.g. a random ModernBERT-base (opencon random-model --config ModernBERT-base.config.json)
#   with a tokenizer.json; PAUSE_THRESHOLD 0 makes every probe reading call the classifier (worst case).
set -euo pipefail
build=$(realpath "$1"); weights=$(realpath "$2"); cls=$(realpath "$3"); n=${4:-32}; pause=${5:-0.75}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/oc_latency_bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/model" "$work/probe"
ln -s "$weights/config.json" "$weights/model.safetensors" "$work/model/"
cp "$here/tests/fixtures/tokenizers/synthetic/tinychat/tokenizer.json" "$here/tests/fixtures/tokenizers/gemma4/chat_template.jinja" \
   "$here/tests/fixtures/tiny-chat/gemma4/tokenizer_config.json" "$work/model/"
hidden=$(python3 -c "import json,sys; c=json.load(open(sys.argv[1])); print(c.get('text_config', c)['hidden_size'])" "$weights/config.json")
# a random probe for that hidden size (its scores do not matter for timing)
python3 - "$work/probe/probe.safetensors" "$hidden" <<'PY'
import json, random, struct, sys
path, h = sys.argv[1], int(sys.argv[2])
random.seed(0)
w = [random.uniform(-1, 1) / h ** 0.5 for _ in range(h)]
hdr = {"head.weight": {"dtype": "F32", "shape": [1, h], "data_offsets": [0, 4 * h]},
       "head.bias": {"dtype": "F32", "shape": [1], "data_offsets": [4 * h, 4 * h + 4]}}
hb = json.dumps(hdr).encode()
hb += b" " * ((8 - len(hb) % 8) % 8)
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(hb)) + hb + struct.pack("<%df" % h, *w) + struct.pack("<f", -1.0))
PY
cat > "$work/probe/config.json" <<JSON
{"model_id": "$work/model", "layer": -4, "hidden_size": $hidden, "threshold": 0.65, "pause_threshold": $pause,
 "probe_every_n_tokens": 4, "smoothing_window": 4, "use_chat_template": true}
JSON
"$build/opencon" benchmark-latency --model_id "$work/model" --probe_path "$work/probe/probe.safetensors" --classifier_dir "$cls" \
  --max_new_tokens "$n" --prompt "Explain SQL injection at a high level" --prompt "Write a short poem about the ocean"
