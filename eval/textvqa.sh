#!/usr/bin/env bash
# TextVQA val with LLaVA-1.5's OCR-token prompt. Files from LLaVA's eval.zip + TextVQA_0.5.1_val.json + train_images.
MODEL=${1:?usage: eval/textvqa.sh MODEL_DIR}
D=${DATA:-playground/data/eval/textvqa}
exec bash "$(dirname "$0")/run_benchmark.sh" textvqa "$MODEL" "$D/llava_textvqa_val_v051_ocr.jsonl" "$D/train_images" \
    "$D/TextVQA_0.5.1_val.json" "${@:2}"
