#!/usr/bin/env bash
# Shared by the per-benchmark scripts: one `piip-llava eval run` per GPU chunk, merge, score.
#   BENCHMARK MODEL QUESTIONS IMAGES ANNOTATIONS [extra `eval run` flags...]
# GPUS (default: all visible, or 1) sets the number of chunks; OUT (default eval/answers) the answers folder.
# Any failed chunk fails the script before merging; `eval score` exits 1 unless every question is answered.
set -euo pipefail
BENCHMARK=$1 MODEL=$2 QUESTIONS=$3 IMAGES=$4 ANNOTATIONS=$5
shift 5
GPUS=${GPUS:-$( (nvidia-smi -L 2>/dev/null || true) | wc -l)}
GPUS=$(( GPUS > 0 ? GPUS : 1 ))
NAME=$(basename "$MODEL")
OUT=${OUT:-eval/answers}/$BENCHMARK/$NAME
mkdir -p "$OUT"
PIDS=()
for ((IDX = 0; IDX < GPUS; IDX++)); do
    CUDA_VISIBLE_DEVICES=$IDX piip-llava eval run --benchmark "$BENCHMARK" --model-path "$MODEL" \
        --question-file "$QUESTIONS" --image-folder "$IMAGES" --answers-file "$OUT/${GPUS}_${IDX}.jsonl" \
        --num-chunks "$GPUS" --chunk-idx "$IDX" "$@" &
    PIDS+=($!)
done
FAILED=0
for ((IDX = 0; IDX < GPUS; IDX++)); do  # a bare `wait` returns 0 even when a chunk crashed
    wait "${PIDS[$IDX]}" || { echo "chunk $IDX of $GPUS failed (rerun to resume it)" >&2; FAILED=1; }
done
(( FAILED == 0 )) || exit 1
CHUNKS=()
for ((IDX = 0; IDX < GPUS; IDX++)); do CHUNKS+=("$OUT/${GPUS}_${IDX}.jsonl"); done
piip-llava eval merge --output "$OUT/merge.jsonl" "${CHUNKS[@]}"
piip-llava eval score --benchmark "$BENCHMARK" --predictions "$OUT/merge.jsonl" --annotations "$ANNOTATIONS" \
    --question-file "$QUESTIONS" | tee "$OUT/score.json"
