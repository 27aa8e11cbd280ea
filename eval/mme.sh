#!/usr/bin/env bash
# MME from the official release folder: questions, images and ground truth all come from
# MME_Benchmark_release_version/ (LLaVA's llava_mme.jsonl asks the same questions). Prints perception and cognition;
# writes the per-category files of MME's own eval_tool/calculation.py to $OUT/mme/<model>/calculation/.
MODEL=${1:?usage: eval/mme.sh MODEL_DIR}
D=${DATA:-playground/data/eval/MME}
RELEASE=$D/MME_Benchmark_release_version
set -euo pipefail
bash "$(dirname "$0")/run_benchmark.sh" mme "$MODEL" "$RELEASE" "$RELEASE" "$RELEASE" "${@:2}"
OUT=${OUT:-eval/answers}/mme/$(basename "$MODEL")
piip-llava eval submit --format mme --predictions "$OUT/merge.jsonl" --questions "$RELEASE" --output "$OUT/calculation"
