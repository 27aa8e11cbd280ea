#!/usr/bin/env bash
# POPE on COCO val2014: accuracy, precision, recall, F1 and yes-ratio per category (random/popular/adversarial).
MODEL=${1:?usage: eval/pope.sh MODEL_DIR}
D=${DATA:-playground/data/eval/pope}
exec bash "$(dirname "$0")/run_benchmark.sh" pope "$MODEL" "$D/llava_pope_test.jsonl" "$D/val2014" "$D/coco" "${@:2}"
