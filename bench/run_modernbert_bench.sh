#!/usr/bin/env bash
# ModernBERT-base-shaped classifier: opencon vs eager PyTorch (Debian python3-torch) on the same
# machine, interleaved twice (this VM's speed drifts between runs).
# usage: bench/run_modernbert_bench.sh BUILD_DIR MODEL_DIR [threads]
#   MODEL_DIR from: BUILD_DIR/opencon random-model --config ../shared/fixtures/configs/ModernBERT-base.config.json --out MODEL_DIR
set -euo pipefail
build=$1; model=$2; threads=${3:-2}
here=$(cd "$(dirname "$0")" && pwd)
for round in 1 2; do
  echo "opencon $("$build/bench/bench_modernbert" "$model" "$threads")"
  echo "pytorch $(/usr/bin/python3 "$here/torch_modernbert.py" "$model" "$threads")"
done
