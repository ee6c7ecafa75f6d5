#!/usr/bin/env bash
# Decode speed, opencon vs llama.cpp (ggml's CPU backend, node-llama-cpp's prebuilt linux-x64 build),
# on one random Llama-3.2-1B-shaped checkpoint, against the same bandwidth ceilings, same run.
# usage: bench/run_ggml_bench.sh [BUILD_DIR] [ROUNDS] [THREADS]
#   needs node/npm (installs node-llama-cpp in BUILD_DIR/ggmlbench) and ~9 GB free under BUILD_DIR
set -euo pipefail
build=$(realpath "${1:-build}")
rounds=${2:-3}
threads=${3:-2}
here=$(cd "$(dirname "$0")/.." && pwd)
work="$build/ggmlbench"
mkdir -p "$work"
model="$work/llama-3.2-1b"
[ -f "$model/model.safetensors" ] ||
  "$build/opencon" random-model --config "$here/../shared/fixtures/configs/Llama-3.2-1B-Instruct.config.json" --out "$model" --seed 1
(cd "$work" && [ -d node_modules/node-llama-cpp ] || {
  cp "$here/bench/ggml/package.json" . && npm install --omit=optional --ignore-scripts --no-audit --no-fund >/dev/null; })
for t in bf16 f16 q8_0; do
  [ -f "$work/llama-$t.gguf.json" ] || node "$here/bench/ggml/gguf_from_safetensors.mjs" "$model" "$work/llama-$t.gguf" "$t"
done
# the modules resolve from $work: run the scripts from copies there
cp "$here/bench/ggml/compare.mjs" "$here/bench/ggml/decode_llamacpp.mjs" "$work/"
(cd "$work" && COMPARE_JSON="$work/compare.json" node compare.mjs "$build/bench/bench_decoder" "$model" "$work" "$rounds" "$threads")
