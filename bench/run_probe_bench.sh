#!/usr/bin/env bash
# Probe-stage speed on a Gemma-4-E2B-shaped random checkpoint through the real CLI:
# collection examples/s, and the time of a 6-layer sweep-layers divided by a 1-layer train-probe
# on the same examples (issue 4 target <= 1.2; the MVP re-runs the model per layer, ~6).
# usage: bench/run_probe_bench.sh BUILD_DIR E2B_MODEL_DIR [N_EXAMPLES] [TOKENS]
set -euo pipefail
build=$(realpath "$1"); weights=$(realpath "$2"); n=${3:-12}; tokens=${4:-200}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/oc_probe_bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
# model dir: the random weights + a small byte-level tokenizer (ids fit any vocabulary) + the
# Gemma 4 chat template; --max_length makes every example exactly $tokens tokens
mkdir "$work/model"
ln -s "$weights/config.json" "$weights/model.safetensors" "$work/model/"
cp "$here/tests/fixtures/tokenizers/synthetic/tinychat/tokenizer.json" "$here/tests/fixtures/tokenizers/gemma4/chat_template.jinja" \
   "$here/tests/fixtures/tiny-chat/gemma4/tokenizer_config.json" "$work/model/"
# long exchanges, both labels
python3 - "$here/../shared/data/converted/jbb_artifacts_exchanges_binary.jsonl" "$n" > "$work/data.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
rows = [r for r in rows if len(r["prompt"]) + len(r["response"]) > 2000]
out = [r for r in rows if r["label"] == 0][: int(sys.argv[2]) // 2] + [r for r in rows if r["label"] == 1][: int(sys.argv[2]) - int(sys.argv[2]) // 2]
for r in out:
    print(json.dumps({"prompt": r["prompt"], "response": r["response"], "label": r["label"]}))
PY
common=(--model_id "$work/model" --data_path "$work/data.jsonl" --max_length "$tokens" --max_examples 0)
t() { local s=$(date +%s.%N); "$@" > /dev/null; echo "$(date +%s.%N) - $s" | bc; }
t_collect1=$(t "$build/opencon" collect-activations "${common[@]}" --layers=-4 --out "$work/a.safetensors" --pack_tokens 0)
t_collectp=$(t "$build/opencon" collect-activations "${common[@]}" --layers=-4 --out "$work/b.safetensors")
t_train=$(t "$build/opencon" train-probe "${common[@]}" --layer -4 --out_dir "$work/probe")
t_sweep=$(t "$build/opencon" sweep-layers "${common[@]}" --layers=-2,-4,-6,-8,-10,-12)
python3 - "$n" "$tokens" "$t_collect1" "$t_collectp" "$t_train" "$t_sweep" <<'PY'
import sys
n, tok = int(sys.argv[1]), int(sys.argv[2])
c1, cp, tr, sw = map(float, sys.argv[3:])
print(f'{{"examples": {n}, "tokens_per_example": {tok}, "collect_examples_per_s": {n / c1:.3f}, '
      f'"collect_packed_examples_per_s": {n / cp:.3f}, "train_probe_s": {tr:.1f}, "sweep_6_layers_s": {sw:.1f}, '
      f'"sweep_over_train_probe": {sw / tr:.3f}}}')
PY
