"""``piip-llava`` command line: one map of subcommands, each a function taking parsed arguments."""

from __future__ import annotations

import argparse
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
    parser.add_argument("--tower", required=True, help="tower preset name (see `piip-llava flops --list`)")
    parser.add_argument(
        "--branch-weights",
        nargs="*",
        default=[],
        metavar="NAME=DIR",
        help="local pretrained checkpoint per branch (HF save_pretrained dir or a timm ConvNeXt state dict)",
    )
    parser.add_argument("--output", required=True, help="directory to write config.json + model.safetensors to")


def _run_build(args: argparse.Namespace) -> int:
    from piip_llava.model.vision import PiipVisionModel, get_tower_config
    from piip_llava.model.vision.weights import load_tower_weights, parse_branch_weights

    logger = logging.getLogger("piip_llava.build")
    try:
        config = get_tower_config(args.tower)
        branch_dirs = parse_branch_weights(args.branch_weights)
        tower = PiipVisionModel(config)
        load_tower_weights(tower, branch_dirs)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    random = [branch.name for branch in config.branches if branch.name not in branch_dirs]
    if random:
        logger.warning("branches with random weights (no --branch-weights given): %s", ", ".join(random))
    tower.save_pretrained(args.output)
    logger.info("saved tower %s to %s", args.tower, args.output)
    return 0


COMMANDS: dict[str, Command] = {
    "flops": Command(
        "vision-tower FLOPs (MACs, as in the paper) and parameter counts of presets", _flops_arguments, _run_flops
    ),
    "build": Command(
        "assemble a vision tower from a preset and local pretrained branch checkpoints", _build_arguments, _run_build
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="piip-llava", description="PIIP-LLaVA: train, evaluate and serve PIIP MLLMs")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        command.add_arguments(subparsers.add_parser(name, help=command.help, description=command.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command].run(args)


if __name__ == "__main__":
    sys.exit(main())
