#!/usr/bin/env bash
# Stage 2 with LoRA on the LLM (r 128, alpha 256, as LLaVA-1.5's LoRA recipe), the projector trained in full
# at its own lr 2e-5 (LLM adapters at 2e-4), ZeRO-3, global batch 128. Merge afterwards with
#   python scripts/merge_lora.py --adapter "$OUTPUT" --output "$OUTPUT-merged"
set -euo pipefail
MODEL=${MODEL:-checkpoints/stage1}
DATA=${DATA:?set DATA to llava_v1_5_mix665k.json}
IMAGES=${IMAGES:?set IMAGES to the stage-2 image folder}
OUTPUT=${OUTPUT:-checkpoints/stage2-lora}
GPUS=${GPUS:-8}
PER_DEVICE=${PER_DEVICE:-16}
GLOBAL_BATCH=${GLOBAL_BATCH:-128}

deepspeed --num_gpus "$GPUS" "$(dirname "$0")/../piip_llava/train/train.py" \
    --deepspeed "$(dirname "$0")/zero3.json" \
    --model_name_or_path "$MODEL" --data_path "$DATA" --image_folder "$IMAGES" \
    --template vicuna_v1 --image_aspect_ratio pad --group_by_modality_length True \
    --tunable_parts projector,llm --lora_enable True --lora_r 128 --lora_alpha 256 \
    --learning_rate 2e-4 --projector_lr 2e-5 \
    --bf16 True --num_train_epochs 1 \
    --per_device_train_batch_size "$PER_DEVICE" --global_batch_size "$GLOBAL_BATCH" \
    --weight_decay 0. --warmup_steps 0.03 --lr_scheduler_type cosine \
    --model_max_length 2048 --gradient_checkpointing True --dataloader_num_workers 4 \
    --save_strategy steps --save_steps 1000 --save_total_limit 1 --logging_steps 1 \
    --report_to tensorboard --output_dir "$OUTPUT" "$@"
