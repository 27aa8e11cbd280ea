#!/usr/bin/env bash
# MMBench-EN dev: every circular round, CircularEval offline against the TSV, per-category accuracy; then the xlsx
# for the OpenCompass server (round 0's answer per index, as LLaVA's single-round script uploads).
MODEL=${1:?usage: eval/mmbench.sh MODEL_DIR}
D=${DATA:-playground/data/eval/mmbench}
TSV=$D/mmbench_dev_20230712.tsv
set -euo pipefail
bash "$(dirname "$0")/run_benchmark.sh" mmbench "$MODEL" "$TSV" "$D" "$TSV" "${@:2}"
OUT=${OUT:-eval/answers}/mmbench/$(basename "$MODEL")
piip-llava eval submit --format mmbench --predictions "$OUT/merge.jsonl" --questions "$TSV" --output "$OUT/submission.xlsx"
