"""Benchmark-evaluation throughput of a tiny PIIP-LLaVA on CPU: questions/s batched vs batch size 1.

LLaVA's own scripts assert batch size 1; here the same TextVQA-format questions run through the same runner with
batch size 1 and batched, alternating, and answers are checked equal (greedy).

    python benchmarks/eval_throughput.py [--questions 64] [--batch 16] [--new-tokens 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from piip_llava.data.synthetic import write_textvqa_set
from piip_llava.eval.benchmarks import get_benchmark
from piip_llava.eval.runner import run_questions
from piip_llava.model.tiny import build_tiny_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, processor = build_tiny_model()
    rates: dict[int, list[float]] = {1: [], args.batch: []}
    with tempfile.TemporaryDirectory() as folder:
        question_file, _, images = write_textvqa_set(Path(folder) / "set", count=args.questions)
        questions = get_benchmark("textvqa").load(question_file, images)
        outputs = {}
        for repeat in range(args.repeats):
            for batch in (1, args.batch):
                answers = Path(folder) / f"{batch}-{repeat}.jsonl"
                start = time.perf_counter()
                run_questions(model, processor, questions, answers, batch_size=batch, max_new_tokens=args.new_tokens)
                rates[batch].append(len(questions) / (time.perf_counter() - start))
                records = [json.loads(line) for line in answers.read_text().splitlines()]
                outputs[batch] = {record["question_id"]: record["text"] for record in records}
    same = outputs[1] == outputs[args.batch]
    print(f"# eval throughput ({platform.machine()}, {args.threads} threads, torch {torch.__version__})")
    print(f"tiny model, {args.questions} TextVQA-format questions, greedy, {args.new_tokens} new tokens max\n")
    print("| batch size | questions/s (median) | all runs |\n|---|---|---|")
    for batch, values in rates.items():
        print(f"| {batch} | {statistics.median(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} |")
    print(f"\nspeedup {statistics.median(rates[args.batch]) / statistics.median(rates[1]):.2f}x; "
          f"batched answers identical to batch size 1: {same}")  # fmt: skip


if __name__ == "__main__":
    main()
