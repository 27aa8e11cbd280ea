#!/usr/bin/env bash
# Stage 2: instruction tuning (docs/design.md#training): everything trains (LLM, projector, both branches and the
# interactions, still at their zero-gate init after stage 1), lr 2e-5, global batch 128, ZeRO-3, pad images,
# `vicuna_v1`, modality-length grouping, 1 epoch, cosine, 3% warm-up, bf16. The global batch stays 128 whatever
# the GPU count. Starts from the stage-1 output (a full model directory).
set -euo pipefail
MODEL=${MODEL:-checkpoints/stage1}
DATA=${DATA:?set DATA to llava_v1_5_mix665k.json}
IMAGES=${IMAGES:?set IMAGES to the folder with coco/ gqa/ ocr_vqa/ textvqa/ vg/}
OUTPUT=${OUTPUT:-checkpoints/stage2}
GPUS=${GPUS:-8}
PER_DEVICE=${PER_DEVICE:-4}
GLOBAL_BATCH=${GLOBAL_BATCH:-128}

deepspeed --num_gpus "$GPUS" "$(dirname "$0")/../piip_llava/train/train.py" \
    --deepspeed "$(dirname "$0")/zero3.json" \
    --model_name_or_path "$MODEL" --data_path "$DATA" --image_folder "$IMAGES" \
    --template vicuna_v1 --image_aspect_ratio pad --group_by_modality_length True \
    --tunable_parts projector,vision_branches,interactions,llm \
    --bf16 True --num_train_epochs 1 \
    --per_device_train_batch_size "$PER_DEVICE" --global_batch_size "$GLOBAL_BATCH" \
    --learning_rate 2e-5 --weight_decay 0. --warmup_steps 0.03 --lr_scheduler_type cosine \
    --model_max_length 2048 --gradient_checkpointing True --dataloader_num_workers 4 \
    --save_strategy steps --save_steps 1000 --save_total_limit 1 --logging_steps 1 \
    --report_to tensorboard --output_dir "$OUTPUT" "$@"
