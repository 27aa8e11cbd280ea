"""``piip-llava eval {run,score,merge,submit}``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .benchmarks import BENCHMARKS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = actions.add_parser("run", help="generate answers for a benchmark (batched, resumable)")
    run.add_argument("--benchmark", required=True, choices=list(BENCHMARKS))
    run.add_argument("--model-path", required=True, help="local PIIP-LLaVA directory")
    run.add_argument("--question-file", required=True, help="the official LLaVA question file (JSONL, JSON or TSV)")
    run.add_argument("--image-folder", help="folder the question file's image paths are relative to")
    run.add_argument("--answers-file", required=True, help="JSONL written incrementally; rerun to resume")
    run.add_argument("--template", help="conversation template (default: the model's, from its config.json)")
    run.add_argument("--image-aspect-ratio", choices=["square", "pad"], help="default: the model's (config.json)")
    run.add_argument("--batch-size", type=int, default=8)
    run.add_argument("--max-new-tokens", type=int, help="default: the benchmark's (128, MMBench 1024)")
    run.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (LLaVA-1.5 protocol)")
    run.add_argument("--num-chunks", type=int, default=1)
    run.add_argument("--chunk-idx", type=int, default=0)
    run.add_argument("--single-round", action="store_true", help="MMBench: one round instead of all circular rounds")
    run.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                     help="auto: bf16 on CUDA (fp16 before Ampere), fp32 on CPU")  # fmt: skip
    run.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda | cuda:N")
    score = actions.add_parser("score", help="score an answers JSONL (any model's) and print JSON")
    score.add_argument("--benchmark", required=True, choices=list(BENCHMARKS))
    score.add_argument("--predictions", required=True)
    score.add_argument("--annotations", help="official annotation file (POPE: the folder of coco_pope_*.json)")
    merge = actions.add_parser("merge", help="join the answers of --num-chunks runs")
    merge.add_argument("--output", required=True)
    merge.add_argument("chunks", nargs="+")
    submit = actions.add_parser("submit", help="write a server submission file")
    submit.add_argument("--format", required=True, choices=["mmbench", "vqav2", "gqa"])
    submit.add_argument("--predictions", required=True)
    submit.add_argument("--questions", help="MMBench TSV / VQAv2 question JSONL")
    submit.add_argument("--output", required=True)


def run(args: argparse.Namespace) -> int:
    if args.action == "score":
        from .benchmarks import get_benchmark

        result = get_benchmark(args.benchmark).score(args.predictions, args.annotations)
        print(json.dumps({"benchmark": args.benchmark, **result}, indent=2))
        return 0
    if args.action == "merge":
        from .runner import merge_answers

        print(merge_answers(args.chunks, args.output))
        return 0
    if args.action == "submit":
        from . import submit

        if args.format == "mmbench":
            print(submit.mmbench_xlsx(args.predictions, args.questions, args.output))
        elif args.format == "vqav2":
            print(submit.vqav2_json(args.predictions, args.questions, args.output))
        else:
            print(submit.gqa_json(args.predictions, args.output))
        return 0
    return _run_benchmark(args)


def _run_benchmark(args: argparse.Namespace) -> int:
    from piip_llava.model.loading import apply_config_preprocessing, load_for_inference

    from .benchmarks import get_benchmark
    from .runner import chunk, run_questions

    benchmark = get_benchmark(args.benchmark)
    if args.benchmark == "mmbench":
        questions = benchmark.load(args.question_file, args.image_folder, all_rounds=not args.single_round)
    else:
        questions = benchmark.load(args.question_file, args.image_folder)
    questions = chunk(questions, args.num_chunks, args.chunk_idx)
    model, processor = load_for_inference(args.model_path, device=args.device, dtype=args.dtype)
    apply_config_preprocessing(processor, model.config, args.image_aspect_ratio)
    template = args.template or model.config.template
    max_new_tokens = args.max_new_tokens or benchmark.max_new_tokens
    run_questions(model, processor, questions, args.answers_file, template, args.batch_size, max_new_tokens,
                  args.temperature, Path(args.model_path).name)  # fmt: skip
    print(Path(args.answers_file))
    return 0
