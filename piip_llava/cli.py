"""``piip-llava`` command line: one map of subcommands, each a function taking parsed arguments."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    passthrough: bool = False  # the command parses its own flags (HfArgumentParser): gets them as args.extra


def _flops_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("preset", nargs="*", help="tower preset name(s); see `piip-llava flops --list`")
    parser.add_argument("--all", action="store_true", help="every non-tiny preset")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.add_argument("--list", action="store_true", help="list the preset names and exit")


def _run_flops(args: argparse.Namespace) -> int:
    from piip_llava.model.vision.flops import count_tower_flops
    from piip_llava.model.vision.presets import TOWER_PRESETS, get_tower_config

    if args.list:
        print("\n".join(TOWER_PRESETS))
        return 0
    names = [n for n in TOWER_PRESETS if not n.startswith("tiny-")] if args.all else args.preset
    if not names:
        print("error: give a preset name or --all (names: piip-llava flops --list)", file=sys.stderr)
        return 2
    try:
        reports = [count_tower_flops(get_tower_config(name), name) for name in names]
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
        return 0
    header = f"{'preset':48s} {'GFLOPs':>8s} {'exact':>8s} {'params M':>9s} {'inter M':>8s}"
    print(header)
    for r in reports:
        print(
            f"{r.preset:48s} {r.vision_gflops:8.1f} {r.vision_gflops_exact:8.1f} "
            f"{r.vision_params_m:9.1f} {r.interaction_params_m:8.2f}"
        )
    return 0


def _build_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, help="directory to save to")
    parser.add_argument("--tower", help="tower preset name (see `piip-llava flops --list`)")
    parser.add_argument(
        "--branch-weights",
        nargs="*",
        default=[],
        metavar="NAME=DIR",
        help="local pretrained checkpoint per branch (HF save_pretrained dir or a timm ConvNeXt state dict)",
    )
    parser.add_argument("--llm", help="local LLM directory (AutoModelForCausalLM + tokenizer): build a whole model")
    parser.add_argument("--projector", help="projector weights (e.g. a stage-1 mm_projector) to load")
    parser.add_argument("--projector-type", default="piip", choices=["piip", "mlp2x_gelu", "linear"])
    parser.add_argument("--template", default="vicuna_v1", help="conversation template saved as the chat template")
    parser.add_argument("--image-aspect-ratio", default="pad", choices=["pad", "square"])
    parser.add_argument("--tiny", action="store_true", help="a random tiny model with a locally trained tokenizer")
    parser.add_argument("--tiny-llm", default="llama", choices=["llama", "qwen2", "mistral"])
    parser.add_argument(
        "--tiny-head-dim",
        type=int,
        help="attention head size of the tiny LLM (default 16; vLLM's CPU attention: >= 32)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the randomly initialised modules")


def _run_build(args: argparse.Namespace) -> int:
    """Tower only (``--tower``), a whole model from a local LLM (``--llm``), or a random tiny model (``--tiny``)."""
    from piip_llava.model.builder import assemble_model
    from piip_llava.model.tiny import save_tiny_model
    from piip_llava.model.vision import PiipVisionModel, get_tower_config
    from piip_llava.model.vision.weights import load_tower_weights, parse_branch_weights

    logger = logging.getLogger("piip_llava.build")
    try:
        if args.tiny:
            save_tiny_model(
                args.output,
                tower=args.tower or "tiny-clip-2branch",
                llm=args.tiny_llm,
                seed=args.seed,
                head_dim=args.tiny_head_dim,
            )
        elif not args.tower:
            raise ValueError("give --tower PRESET (with --llm DIR for a whole model), or --tiny")
        elif args.llm:
            import torch

            torch.manual_seed(args.seed)  # the new modules' init: projector, interactions, random branches
            model, processor = assemble_model(
                args.tower,
                args.llm,
                parse_branch_weights(args.branch_weights),
                projector_path=args.projector,
                projector_type=args.projector_type,
                template=args.template,
                image_aspect_ratio=args.image_aspect_ratio,
            )
            model.save_pretrained(args.output)
            processor.save_pretrained(args.output)
        else:
            config = get_tower_config(args.tower)
            branch_dirs = parse_branch_weights(args.branch_weights)
            tower = PiipVisionModel(config)
            load_tower_weights(tower, branch_dirs)
            random = [branch.name for branch in config.branches if branch.name not in branch_dirs]
            if random:
                logger.warning("branches with random weights (no --branch-weights given): %s", ", ".join(random))
            tower.save_pretrained(args.output)
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    logger.info("saved to %s", args.output)
    return 0


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    """No flags of its own: all go to HfArgumentParser (`piip-llava train --help` lists them)."""


def _run_train(args: argparse.Namespace) -> int:
    from piip_llava.train.train import train

    return train(args.extra)


def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    from piip_llava.eval.cli import add_arguments

    add_arguments(parser)


def _run_eval(args: argparse.Namespace) -> int:
    from piip_llava.eval.cli import run

    return run(args)


def _convert_arguments(parser: argparse.ArgumentParser) -> None:
    from piip_llava.convert.cli import add_arguments

    add_arguments(parser)


def _run_convert(args: argparse.Namespace) -> int:
    from piip_llava.convert.cli import run

    try:
        return run(args)
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


# `piip-llava serve ROLE ...`: each role is a module with its own flags (`piip-llava serve api --help`).
SERVE_ROLES = {
    "controller": "controller",
    "worker": "model_worker",
    "api": "openai_api",
    "web": "gradio_web_server",
    "local": "launch",
}


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("role", choices=list(SERVE_ROLES), help="local = all of them for one model on this machine")


def _run_serve(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"piip_llava.serve.{SERVE_ROLES[args.role]}")
    return module.main(args.extra) or 0


def _chat_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags go to piip_llava.serve.cli (`piip-llava chat --help`)."""


def _run_chat(args: argparse.Namespace) -> int:
    from piip_llava.serve.cli import main as chat

    return chat(args.extra) or 0


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    from piip_llava.demo import add_arguments

    add_arguments(parser)


def _run_demo(args: argparse.Namespace) -> int:
    from piip_llava.demo import run

    return run(args)


COMMANDS: dict[str, Command] = {
    "flops": Command(
        "vision-tower FLOPs (MACs, as in the paper) and parameter counts of presets", _flops_arguments, _run_flops
    ),
    "train": Command(
        "train a stage (projector alignment or instruction tuning) with HF Trainer",
        _train_arguments,
        _run_train,
        passthrough=True,
    ),
    "eval": Command("run, score and submit LLaVA-1.5 benchmarks (batched, resumable)", _eval_arguments, _run_eval),
    "build": Command(
        "assemble a vision tower or a whole PIIP-LLaVA from local checkpoints, or a random tiny model",
        _build_arguments,
        _run_build,
    ),
    "serve": Command(
        "serving stack: controller, model worker, OpenAI API, Gradio web demo, or all locally",
        _serve_arguments,
        _run_serve,
        passthrough=True,
    ),
    "chat": Command("chat with a model in the terminal (streaming, multi-turn)", _chat_arguments, _run_chat, True),
    "convert": Command(
        "convert official PIIP-LLaVA / LLaVA-1.5 checkpoints to ours, or export the baseline to HF Llava",
        _convert_arguments,
        _run_convert,
    ),
    "demo": Command(
        "the synthetic quickstart: data, two-stage training, evaluation, local serving (CPU, minutes)",
        _demo_arguments,
        _run_demo,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="piip-llava", description="PIIP-LLaVA: train, evaluate and serve PIIP MLLMs")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        subparser = subparsers.add_parser(
            name, help=command.help, description=command.help, add_help=not command.passthrough
        )
        command.add_arguments(subparser)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not COMMANDS[args.command].passthrough:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    return COMMANDS[args.command].run(args)


if __name__ == "__main__":
    sys.exit(main())
