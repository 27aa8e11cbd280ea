#!/usr/bin/env bash
# Stage 1: projector alignment (docs/design.md#training): projector only, lr 1e-3, global batch 256, ZeRO-2, square
# images, `plain` template, 1 epoch, cosine, 3% warm-up (`--warmup_steps 0.03`: a ratio in transformers 5), no weight decay, bf16. Override with environment
# variables; the global batch stays 256 whatever the GPU count (gradient accumulation is derived).
set -euo pipefail
MODEL=${MODEL:?set MODEL to a local PIIP-LLaVA dir from "piip-llava build --tower ... --llm ..."}
DATA=${DATA:?set DATA to blip_laion_cc_sbu_558k.json}
IMAGES=${IMAGES:?set IMAGES to the LLaVA-Pretrain images folder}
OUTPUT=${OUTPUT:-checkpoints/stage1}
GPUS=${GPUS:-8}
PER_DEVICE=${PER_DEVICE:-32}
GLOBAL_BATCH=${GLOBAL_BATCH:-256}

deepspeed --num_gpus "$GPUS" "$(dirname "$0")/../piip_llava/train/train.py" \
    --deepspeed "$(dirname "$0")/zero2.json" \
    --model_name_or_path "$MODEL" --data_path "$DATA" --image_folder "$IMAGES" \
    --template plain --image_aspect_ratio square --tunable_parts projector \
    --bf16 True --num_train_epochs 1 \
    --per_device_train_batch_size "$PER_DEVICE" --global_batch_size "$GLOBAL_BATCH" \
    --learning_rate 1e-3 --weight_decay 0. --warmup_steps 0.03 --lr_scheduler_type cosine \
    --model_max_length 2048 --gradient_checkpointing True --dataloader_num_workers 4 \
    --save_strategy steps --save_steps 24000 --save_total_limit 1 --logging_steps 1 \
    --report_to tensorboard --output_dir "$OUTPUT" "$@"
