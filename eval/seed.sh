#!/usr/bin/env bash
# SEED-Bench: exact-letter accuracy on the image split (the reported number), per question type; video questions
# (middle frames) are scored too when LLaVA's question file includes them.
MODEL=${1:?usage: eval/seed.sh MODEL_DIR}
D=${DATA:-playground/data/eval/seed_bench}
exec bash "$(dirname "$0")/run_benchmark.sh" seed "$MODEL" "$D/llava-seed-bench.jsonl" "$D" "$D/SEED-Bench.json" "${@:2}"
