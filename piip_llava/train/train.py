"""``piip-llava train``: one path from flags to the HF ``Trainer`` (docs/design.md#training).

    piip-llava train --model_name_or_path DIR --data_path data.json --image_folder images \\
        --template plain --tunable_parts projector --output_dir out/stage1 [--deepspeed scripts/zero2.json] …

Launch several processes with ``deepspeed`` or ``torchrun`` (see README "Train"). A run resumes from the last
checkpoint in ``output_dir`` automatically.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import torch
from transformers import AutoProcessor, HfArgumentParser, set_seed
from transformers.trainer_utils import get_last_checkpoint

import piip_llava.model  # noqa: F401  (registers the Auto classes)
from piip_llava.data import DataConfig, LlavaCollator, LlavaDataset
from piip_llava.data.preprocess import SampleError
from piip_llava.model import PiipLlavaConfig, PiipLlavaForConditionalGeneration
from piip_llava.model.builder import load_projector_weights
from piip_llava.model.loading import apply_config_preprocessing
from piip_llava.train.arguments import DataArguments, ModelArguments, TrainingArguments
from piip_llava.train.lora import wrap_lora
from piip_llava.train.stages import apply_tunable_parts, parameter_counts
from piip_llava.train.trainer import JsonlLogCallback, PiipLlavaTrainer

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    return parser.parse_args_into_dataclasses(args=argv)


def record_preprocessing(model_config: PiipLlavaConfig, processor, data_args: DataArguments) -> None:
    """The template and image mode this stage trains with become the model's (config.json is the one source of
    truth that evaluation and serving read); the processor's image mode and chat template follow."""
    if data_args.template:
        model_config.template = data_args.template
    if data_args.image_aspect_ratio:
        model_config.image_aspect_ratio = data_args.image_aspect_ratio
    model_config.validate_preprocessing()
    apply_config_preprocessing(processor, model_config)


def build_dataset(model_config: PiipLlavaConfig, processor, data_args: DataArguments) -> LlavaDataset:
    record_preprocessing(model_config, processor, data_args)
    config = DataConfig(
        template=model_config.template,
        image_seq_length=model_config.image_seq_length,
        max_length=data_args.model_max_length,
        image_folder=data_args.image_folder,
    )
    return LlavaDataset(data_args.data_path, processor.tokenizer, processor.image_processor, config)


def dry_run(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments) -> int:
    """Build the model on ``meta`` from its config, read and validate every sample, print counts, exit."""
    config = PiipLlavaConfig.from_pretrained(model_args.model_name_or_path)
    with torch.device("meta"):
        model = PiipLlavaForConditionalGeneration(config)
    apply_tunable_parts(model, training_args.tunable_parts_list)
    processor = AutoProcessor.from_pretrained(model_args.model_name_or_path)
    dataset = build_dataset(config, processor, data_args)
    problems, images, text_only, longest = [], 0, 0, 0
    for index in range(len(dataset)):
        try:
            sample = dataset.load_sample(index)
        except SampleError as error:
            problems.append({"index": index, "reason": str(error)})
            continue
        longest = max(longest, len(sample["input_ids"]))
        images += len(sample.get("pixel_values", []))
        text_only += "pixel_values" not in sample
    report = {
        "samples": len(dataset),
        "usable": len(dataset) - len(problems),
        "text_only": text_only,
        "images": images,
        "longest_tokens": longest,
        "problems": problems,
        "parameters": {part: {"trainable": t, "total": n} for part, (t, n) in parameter_counts(model).items()},
    }
    print(json.dumps(report, indent=2))
    return 0


def load_model(model_args: ModelArguments, training_args: TrainingArguments) -> PiipLlavaForConditionalGeneration:
    dtype = torch.bfloat16 if training_args.bf16 else torch.float32
    model = PiipLlavaForConditionalGeneration.from_pretrained(
        model_args.model_name_or_path, dtype=dtype, attn_implementation=model_args.attn_implementation
    )
    if model_args.pretrain_projector:
        load_projector_weights(model.model.multi_modal_projector, model_args.pretrain_projector)
        logger.info("loaded the projector from %s", model_args.pretrain_projector)
    apply_tunable_parts(model, training_args.tunable_parts_list)
    if training_args.gradient_checkpointing:
        model.config.use_cache = False
    if training_args.lora_enable:
        model = wrap_lora(
            model,
            training_args.tunable_parts_list,
            training_args.lora_r,
            training_args.lora_alpha,
            training_args.lora_dropout,
        )
    return model


def train(argv: list[str] | None = None) -> int:
    model_args, data_args, training_args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if training_args.should_log else logging.WARNING)
    if training_args.dry_run:
        return dry_run(model_args, data_args, training_args)
    # Set up the process groups before from_pretrained: under ZeRO-3 the model is built inside zero.Init, which
    # reads the world size from deepspeed.comm (not initialised by the Trainer on CPU).
    logger.info("processes: %d", training_args.world_size)
    if training_args.deepspeed:
        import deepspeed

        deepspeed.init_distributed()
    # Seed before the model is built, as HF's example scripts do: LoRA's adapter init draws from the global RNG.
    set_seed(training_args.seed)
    model = load_model(model_args, training_args)
    processor = AutoProcessor.from_pretrained(model_args.model_name_or_path)
    dataset = build_dataset(model.config, processor, data_args)
    trainer = PiipLlavaTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=LlavaCollator(processor.tokenizer.pad_token_id),
        modality_lengths=dataset.modality_lengths() if training_args.group_by_modality_length else None,
        callbacks=[JsonlLogCallback()],
    )
    counts = parameter_counts(model.get_base_model() if training_args.lora_enable else model)
    logger.info("trainable / total parameters per part: %s", counts)
    last = get_last_checkpoint(training_args.output_dir) if Path(training_args.output_dir).is_dir() else None
    if last:
        logger.info("resuming from %s", last)
    trainer.train(resume_from_checkpoint=last)
    trainer.report_skipped()
    trainer.save_model(training_args.output_dir)
    if trainer.args.should_save:
        processor.save_pretrained(training_args.output_dir)
    if training_args.world_size > 1 and torch.distributed.is_initialized():
        # Leave together: a rank that exits while rank 0 still writes files can make gloo abort (SIGABRT, seen
        # once in CI after a finished ZeRO-3 run).
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


def main() -> None:
    """The launchers' entry point (`deepspeed`/`torchrun piip_llava/train/train.py`)."""
    code = train()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Everything is saved and the ranks have left the process groups together (end of train()). A rank can
        # still abort in interpreter teardown ("terminate called without an active exception", SIGABRT, with no
        # Python frame left: a native thread of the distributed stack being destroyed at exit). It did in about
        # 1 finished ZeRO-3 CPU run in 10 (tests/train/test_two_stage_deepspeed.py), so the launcher reported a
        # failure for a run that had written all its files. Skip the teardown once the output is flushed.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
