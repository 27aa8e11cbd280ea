#!/usr/bin/env bash
# MME: perception and cognition scores. Annotations: JSONL of {question_id, category, image, answer}.
MODEL=${1:?usage: eval/mme.sh MODEL_DIR}
D=${DATA:-playground/data/eval/MME}
exec bash "$(dirname "$0")/run_benchmark.sh" mme "$MODEL" "$D/llava_mme.jsonl" "$D/MME_Benchmark_release_version" \
    "$D/mme_answers.jsonl" "${@:2}"
