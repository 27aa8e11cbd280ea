"""``piip-llava eval {run,score,merge,submit}``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from piip_llava.model.loading import add_loading_arguments

from .benchmarks import BENCHMARKS

logger = logging.getLogger(__name__)


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
    add_loading_arguments(run)  # --device, --dtype, --model-base, --load-8bit / --load-4bit
    score = actions.add_parser("score", help="score an answers JSONL (ours or LLaVA's) and print JSON")
    score.add_argument("--benchmark", required=True, choices=list(BENCHMARKS))
    score.add_argument("--predictions", required=True)
    score.add_argument("--annotations", help="official annotations: TextVQA_0.5.1_val.json, "
                       "testdev_balanced_questions.json, POPE's coco/ folder, ScienceQA's problems.json, "
                       "SEED-Bench.json, MME_Benchmark_release_version/, the MMBench TSV")  # fmt: skip
    score.add_argument("--question-file", help="POPE: llava_pope_test.jsonl (gives each answer its category)")
    score.add_argument("--allow-partial", action="store_true",
                       help="score the answered questions when some are missing, unknown or answered twice "
                       "differently (default: exit 1)")  # fmt: skip
    merge = actions.add_parser("merge", help="join the answers of --num-chunks runs, in chunk order")
    merge.add_argument("--output", required=True)
    merge.add_argument("chunks", nargs="+")
    submit = actions.add_parser("submit", help="write a server submission or official-evaluator file")
    submit.add_argument("--format", required=True, choices=["mmbench", "vqav2", "gqa", "mme"])
    submit.add_argument("--predictions", required=True)
    submit.add_argument("--questions", help="MMBench TSV / VQAv2 question JSONL / MME_Benchmark_release_version")
    submit.add_argument("--output", required=True, help="a file; MME: the results folder for calculation.py")


def run(args: argparse.Namespace) -> int:
    if args.action == "run":
        return _run_benchmark(args)
    try:
        return _files_action(args)
    except (ValueError, OSError) as error:  # bad input files: the message names the file (and line)
        logger.error("%s", error)
        return 2


def _files_action(args: argparse.Namespace) -> int:
    if args.action == "score":
        return _score(args)
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
        elif args.format == "mme":
            from .mme import write_mme_results
            from .records import read_answers

            print(write_mme_results(read_answers(args.predictions), args.questions, args.output))
        else:
            print(submit.gqa_json(args.predictions, args.output))
        return 0
    raise AssertionError(args.action)


def _score(args: argparse.Namespace) -> int:
    """Print the score as JSON; exit 1 (after printing what was there) when answers are missing, unknown or
    answered twice differently, unless ``--allow-partial``."""
    from .benchmarks import get_benchmark
    from .records import IncompleteAnswers

    benchmark = get_benchmark(args.benchmark)
    try:
        result = benchmark.score(args.predictions, args.annotations, args.question_file, args.allow_partial)
    except IncompleteAnswers as error:
        print(json.dumps({"benchmark": args.benchmark, **error.result}, indent=2))
        logger.error("%s: %s", args.predictions, error)
        return 1
    print(json.dumps({"benchmark": args.benchmark, **result}, indent=2))
    if result["answered"] < result["expected"]:
        logger.warning("partial score: %d of %d questions answered", result["answered"], result["expected"])
    return 0


def _run_benchmark(args: argparse.Namespace) -> int:
    from piip_llava.model.loading import apply_config_preprocessing, load_for_inference, loading_options

    from .benchmarks import get_benchmark
    from .runner import chunk, run_questions

    benchmark = get_benchmark(args.benchmark)
    if args.benchmark == "mmbench":
        questions = benchmark.load(args.question_file, args.image_folder, all_rounds=not args.single_round)
    else:
        questions = benchmark.load(args.question_file, args.image_folder)
    questions = chunk(questions, args.num_chunks, args.chunk_idx)
    model, processor = load_for_inference(args.model_path, **loading_options(args))
    apply_config_preprocessing(processor, model.config, args.image_aspect_ratio)
    template = args.template or model.config.template
    max_new_tokens = args.max_new_tokens or benchmark.max_new_tokens
    run_questions(model, processor, questions, args.answers_file, template, args.batch_size, max_new_tokens,
                  args.temperature, Path(args.model_path).name)  # fmt: skip
    print(Path(args.answers_file))
    return 0
