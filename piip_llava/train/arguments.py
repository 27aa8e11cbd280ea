"""Typed arguments of ``piip-llava train`` (parsed by ``HfArgumentParser``; docs/design.md#training)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments as HfTrainingArguments

TUNABLE_PARTS = ("projector", "vision_branches", "interactions", "llm")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        metadata={"help": "local PIIP-LLaVA directory (from `piip-llava build` or a stage)"}
    )
    pretrain_projector: str | None = field(
        default=None, metadata={"help": "stage-1 output dir or weights file whose projector is loaded (stage 2)"}
    )
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa | eager | flash_attention_2"})


@dataclass
class DataArguments:
    data_path: str = field(metadata={"help": "LLaVA-format .json array or .jsonl"})
    image_folder: str | None = field(default=None, metadata={"help": "image paths are relative to this folder"})
    template: str | None = field(
        default=None,
        metadata={"help": "plain for stage 1, vicuna_v1 for stage 2 (default: the model's); saved in config.json"},
    )
    image_aspect_ratio: str | None = field(
        default=None, metadata={"help": "square | pad (default: the model's); saved in config.json"}
    )
    model_max_length: int = field(default=2048, metadata={"help": "longer samples are truncated (never in an image)"})


@dataclass
class TrainingArguments(HfTrainingArguments):
    tunable_parts: str = field(
        default="projector", metadata={"help": f"comma-separated subset of {', '.join(TUNABLE_PARTS)}"}
    )
    projector_lr: float | None = field(default=None, metadata={"help": "learning rate of the projector if different"})
    group_by_modality_length: bool = field(default=False, metadata={"help": "batches of one modality, by length"})
    global_batch_size: int | None = field(
        default=None,
        metadata={"help": "keep this global batch whatever the process count: gradient accumulation is derived"},
    )
    lora_enable: bool = field(default=False, metadata={"help": "train LoRA adapters on the LLM (PEFT)"})
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    dry_run: bool = field(default=False, metadata={"help": "validate model shapes and the whole data file, then exit"})
    remove_unused_columns: bool = False

    def __post_init__(self):
        super().__post_init__()
        parts = [part.strip() for part in self.tunable_parts.split(",") if part.strip()]
        unknown = sorted(set(parts) - set(TUNABLE_PARTS))
        if unknown or not parts:
            raise ValueError(f"--tunable_parts: unknown {unknown}; choose from {', '.join(TUNABLE_PARTS)}")
        self.tunable_parts_list = parts
        if self.global_batch_size:
            per_step = self.per_device_train_batch_size * self.world_size
            if self.global_batch_size % per_step:
                raise ValueError(
                    f"--global_batch_size {self.global_batch_size} is not a multiple of per-device batch "
                    f"{self.per_device_train_batch_size} x {self.world_size} processes"
                )
            self.gradient_accumulation_steps = self.global_batch_size // per_step
