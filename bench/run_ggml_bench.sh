#!/usr/bin/env bash
# Decode speed, opencon vs llama.cpp (ggml's CPU backend, node-llama-cpp's prebuilt linux-x64 build),
# on the same weights, against the same bandwidth ceilings, same run.
# usage: bench/run_ggml_bench.sh [BUILD_DIR] [ROUNDS] [THREADS] [MODEL_DIR]
#   MODEL_DIR: a BF16 Llama or Gemma 4 checkpoint (one model.safetensors); without it a random
#   Llama-3.2-1B-shaped one is written. Its GGUF forms go to BUILD_DIR/ggmlbench (~1.5x the
#   checkpoint's size on disk for bf16 + q8_0; kept between runs, delete them to rewrite); needs node/npm
#   (installs node-llama-cpp there).
set -euo pipefail
build=$(realpath "${1:-build}")
rounds=${2:-3}
threads=${3:-2}
here=$(cd "$(dirname "$0")/.." && pwd)
work="$build/ggmlbench"
mkdir -p "$work"
if [ -n "${4:-}" ]; then
  model=$(realpath "$4")
else
  model="$work/llama-3.2-1b"
  [ -f "$model/model.safetensors" ] ||
    "$build/opencon" random-model --config "$here/../shared/fixtures/configs/Llama-3.2-1B-Instruct.config.json" --out "$model" --seed 1
fi
stem="$work/$(basename "$model")"
(cd "$work" && [ -d node_modules/node-llama-cpp ] || {
  cp "$here/bench/ggml/package.json" . && npm install --omit=optional --ignore-scripts --no-audit --no-fund >/dev/null; })
# GGUF_TYPES: the llama.cpp forms to compare (default bf16 q8_0: with the checkpoint, ~24 GB of files,
# within the page cache one engine's files at a time)
for t in ${GGUF_TYPES:-bf16 q8_0}; do
  [ -f "$stem-$t.gguf.json" ] || node "$here/bench/ggml/gguf_from_safetensors.mjs" "$model" "$stem-$t.gguf" "$t"
done
# the modules resolve from $work: run the scripts from copies there
cp "$here/bench/ggml/compare.mjs" "$here/bench/ggml/decode_llamacpp.mjs" "$work/"
(cd "$work" && COMPARE_JSON="$stem-compare.json" node compare.mjs "$build/bench/bench_decoder" "$model" "$stem" "$rounds" "$threads")
