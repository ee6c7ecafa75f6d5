#!/usr/bin/env bash
# Tokenizer encode throughput, opencon vs transformers.js, same corpus and files, same run.
# usage: bench/run_tokenizer_bench.sh [BUILD_DIR]   (needs node/npm; installs transformers.js in build/jsbench)
set -euo pipefail
build=${1:-build}
here=$(cd "$(dirname "$0")/.." && pwd)
python3 "$here/bench/make_corpus.py" "$build/corpus.txt" 10
scripts/fetch-tokenizers.sh "$build" >/dev/null
specs=(qwen3="$build/tokenizers/qwen3/tokenizer.json" llama3="$build/tokenizers/llama3/tokenizer.json"
       gemma3="$build/tokenizers/gemma3/tokenizer.json" modernbert="$here/tests/fixtures/tokenizers/modernbert/tokenizer.json")
"$build/bench/bench_tokenizer" "$build/corpus.txt" "${specs[@]}"
mkdir -p "$build/jsbench"
(cd "$build/jsbench" && [ -d node_modules/@huggingface/transformers ] || { npm init -y >/dev/null && npm install --ignore-scripts --no-audit --no-fund @huggingface/transformers@4.3.2 >/dev/null; })
abs=()
for s in "${specs[@]}"; do abs+=("${s%%=*}=$(realpath "${s#*=}")"); done
(cd "$build/jsbench" && node "$here/bench/tokenizer_js.mjs" "$(realpath "../corpus.txt" 2>/dev/null || realpath "$here/$build/corpus.txt")" "${abs[@]}")
