#!/usr/bin/env bash
# SEED-Bench (image split): letter accuracy per question type.
MODEL=${1:?usage: eval/seed.sh MODEL_DIR}
D=${DATA:-playground/data/eval/seed_bench}
exec bash "$(dirname "$0")/run_benchmark.sh" seed "$MODEL" "$D/llava-seed-bench.jsonl" "$D" "$D/SEED-Bench.json" "${@:2}"
