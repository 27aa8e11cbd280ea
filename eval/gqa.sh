#!/usr/bin/env bash
# GQA testdev-balanced: exact match; `piip-llava eval submit --format gqa` writes the official eval.py input.
MODEL=${1:?usage: eval/gqa.sh MODEL_DIR}
D=${DATA:-playground/data/eval/gqa}
exec bash "$(dirname "$0")/run_benchmark.sh" gqa "$MODEL" "$D/llava_gqa_testdev_balanced.jsonl" "$D/data/images" \
    "$D/testdev_balanced_questions.json" "${@:2}"
