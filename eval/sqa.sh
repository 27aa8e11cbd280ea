#!/usr/bin/env bash
# ScienceQA test (single-pred prompt): accuracy over the test split and ScienceQA-IMG (img_accuracy, the reported
# number). Needs problems.json and pid_splits.json from ScienceQA's data/scienceqa next to the question file.
MODEL=${1:?usage: eval/sqa.sh MODEL_DIR}
D=${DATA:-playground/data/eval/scienceqa}
exec bash "$(dirname "$0")/run_benchmark.sh" scienceqa "$MODEL" "$D/llava_test_CQM-A.json" "$D/images/test" \
    "$D/problems.json" "${@:2}"
