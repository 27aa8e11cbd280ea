"""Training throughput of a tiny PIIP-LLaVA on CPU, with and without modality-length grouping.

Mixed data as in LLaVA-665K: image+text samples and text-only samples of varied lengths. Grouping puts one
modality per batch (text-only batches skip the vision tower) and similar lengths together (less padding).
Both settings run in one process, alternating, and the median samples/s of each is reported.

    python benchmarks/train_step.py [--steps 20] [--batch 8] [--repeats 3] [--threads 2]

``--model DIR --data FILE --image-folder DIR`` runs a saved model on a LLaVA-format data file instead, e.g. the
quickstart's stage 2: its stage-1 model on its instruction mix (``vicuna_v1``, ``pad`` images).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoProcessor

from piip_llava.data import DataConfig, LlavaCollator, LlavaDataset
from piip_llava.model import PiipLlavaForConditionalGeneration
from piip_llava.model.tiny import WORDS, build_tiny_model
from piip_llava.train.arguments import DataArguments, TrainingArguments
from piip_llava.train.stages import apply_tunable_parts
from piip_llava.train.train import build_dataset
from piip_llava.train.trainer import PiipLlavaTrainer


def write_mixed_data(folder: Path, samples: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True)
    records = []
    for i in range(samples):
        answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 120)))
        if i % 2 == 0:
            Image.new("RGB", (64, 48), (i % 255, 90, 160)).save(folder / "images" / f"{i}.png")
            turns = [{"from": "human", "value": "<image>\nDescribe the image."}, {"from": "gpt", "value": answer}]
            records.append({"id": str(i), "image": f"{i}.png", "conversations": turns})
        else:
            turns = [{"from": "human", "value": "Tell me about shapes."}, {"from": "gpt", "value": answer}]
            records.append({"id": str(i), "conversations": turns})
    path = folder / "data.json"
    path.write_text(json.dumps(records))
    return path


def run(model, processor, dataset, grouped: bool, steps: int, batch: int, output: str) -> float:
    args = TrainingArguments(
        output_dir=output, per_device_train_batch_size=batch, max_steps=steps, learning_rate=1e-4,
        group_by_modality_length=grouped, tunable_parts="projector,vision_branches,interactions,llm",
        report_to="none", save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = PiipLlavaTrainer(
        model=model, args=args, train_dataset=dataset, data_collator=LlavaCollator(processor.tokenizer.pad_token_id),
        modality_lengths=dataset.modality_lengths() if grouped else None,
    )  # fmt: skip
    return trainer.train().metrics["train_samples_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--model", type=Path, help="a saved PIIP-LLaVA model (default: a random tiny one)")
    parser.add_argument("--data", type=Path, help="LLaVA-format data for --model (default: mixed synthetic data)")
    parser.add_argument("--image-folder", type=Path, help="the images of --data")
    args = parser.parse_args()
    if (args.model is None) != (args.data is None):
        parser.error("--model and --data go together")
    torch.set_num_threads(args.threads)
    if args.model:
        model = PiipLlavaForConditionalGeneration.from_pretrained(args.model)
        processor = AutoProcessor.from_pretrained(args.model)
    else:
        model, processor = build_tiny_model()
    model.train()
    apply_tunable_parts(model, ["projector", "vision_branches", "interactions", "llm"])
    with tempfile.TemporaryDirectory() as folder:
        if args.model:  # as `piip-llava train` reads it for the quickstart's stage 2
            data_args = DataArguments(data_path=str(args.data), image_folder=str(args.image_folder or ""),
                                      template="vicuna_v1", image_aspect_ratio="pad", model_max_length=512)  # fmt: skip
            dataset = build_dataset(model.config, processor, data_args)
        else:
            data = write_mixed_data(Path(folder) / "data", samples=args.steps * args.batch)
            config = DataConfig(template="vicuna_v1", image_seq_length=model.config.image_seq_length, max_length=1024)
            dataset = LlavaDataset(data, processor.tokenizer, processor.image_processor, config)
        rates = {False: [], True: []}
        for _ in range(args.repeats):
            for grouped in (False, True):
                rates[grouped].append(run(model, processor, dataset, grouped, args.steps, args.batch, folder))
    print(f"# train-step benchmark ({platform.machine()}, {args.threads} threads, torch {torch.__version__})")
    what = f"{args.model} on {args.data}" if args.model else "tiny model, half text-only samples"
    print(f"{what}, batch {args.batch}, {args.steps} steps x {args.repeats} repeats\n")
    print("| sampler | samples/s (median) | all runs |\n|---|---|---|")
    for grouped, name in ((False, "random"), (True, "modality-length grouped")):
        print(f"| {name} | {statistics.median(rates[grouped]):.1f} | {', '.join(f'{r:.1f}' for r in rates[grouped])} |")
    print(f"\nspeedup {statistics.median(rates[True]) / statistics.median(rates[False]):.2f}x")


if __name__ == "__main__":
    main()
