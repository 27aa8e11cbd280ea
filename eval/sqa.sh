#!/usr/bin/env bash
# ScienceQA-IMG test (single-pred prompt): letter accuracy against problems.json.
MODEL=${1:?usage: eval/sqa.sh MODEL_DIR}
D=${DATA:-playground/data/eval/scienceqa}
exec bash "$(dirname "$0")/run_benchmark.sh" scienceqa "$MODEL" "$D/llava_test_CQM-A.json" "$D/images/test" \
    "$D/problems.json" "${@:2}"
