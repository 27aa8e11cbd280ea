"""``piip-llava convert --from {piip-official,llava} SRC DST`` and ``piip-llava convert --to {hf-llava,remote-code}
SRC DST``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument(
        "--from",
        dest="source_format",
        choices=["piip-official", "llava"],
        help="convert a checkpoint of the official PIIP-LLaVA code or of LLaVA-1.5 into ours",
    )
    direction.add_argument(
        "--to",
        dest="target_format",
        choices=["hf-llava", "remote-code"],
        help="hf-llava: export our single-branch baseline to transformers' LlavaForConditionalGeneration; "
        "remote-code: a copy that loads with transformers alone (trust_remote_code=True)",
    )
    parser.add_argument("src", help="source checkpoint directory or weights file")
    parser.add_argument("dst", help="output directory")
    tower = parser.add_mutually_exclusive_group()
    tower.add_argument("--config", help="piip-official: the tower preset (`piip-llava flops --list`)")
    tower.add_argument("--official-config", help="piip-official: the `model` dict of an official config, as JSON")
    parser.add_argument(
        "--branch-config",
        action="append",
        default=[],
        metavar="BRANCH=SOURCE",
        help="with --official-config: branch1/branch2's HF config as a local directory, a config.json file or "
        "inline JSON (default: the branch's `pretrained` directory)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--tower-only", action="store_true",
                      help="piip-official: SRC is a tower state dict without the model.vision_tower.vision_tower. "
                           "prefix; writes a PiipVisionModel directory")  # fmt: skip
    mode.add_argument(
        "--projector-only",
        action="store_true",
        help="piip-official: SRC is a stage-1 mm_projector.bin; writes DST/mm_projector.safetensors",
    )
    parser.add_argument(
        "--projector", help="with --tower-only: projector state dict (keys without model.mm_projector.)"
    )
    parser.add_argument("--vision-tower", help="--from llava: local CLIP directory (config, and weights if the "
                                               "checkpoint has none)")  # fmt: skip
    parser.add_argument("--template", default="vicuna_v1", help="--from: conversation template of the chat template")


def parse_branch_configs(specs: list[str]) -> dict[str, str | dict]:
    """``["branch1=/cfg/clip", 'branch2={"hidden_sizes": …}']`` → ``{"branch1": "/cfg/clip", "branch2": {…}}``."""
    parsed: dict[str, str | dict] = {}
    for spec in specs:
        name, sep, source = spec.partition("=")
        if not sep or not name or not source:
            raise ValueError(f"--branch-config expects BRANCH=DIR|FILE|JSON, got {spec!r}")
        parsed[name] = json.loads(source) if source.lstrip().startswith("{") else source
    return parsed


def _vision_config(args: argparse.Namespace):
    from piip_llava.model.vision import get_tower_config

    from .official_piip import official_vision_config

    if args.config:
        if args.branch_config:
            raise ValueError("--branch-config goes with --official-config, not with a --config preset")
        return get_tower_config(args.config)
    if not args.official_config:
        raise ValueError("--from piip-official needs the tower: --config PRESET or --official-config FILE.json")
    model = json.loads(Path(args.official_config).read_text())
    return official_vision_config(model, parse_branch_configs(args.branch_config))


def _check_flags(args: argparse.Namespace) -> None:
    allowed = {
        "piip-official": {"config", "official_config", "branch_config", "tower_only", "projector_only", "projector",
                          "template"},
        "llava": {"vision_tower", "template"},
        "hf-llava": set(),
        "remote-code": set(),
    }[args.source_format or args.target_format]  # fmt: skip
    given = {"config", "official_config", "branch_config", "tower_only", "projector_only", "projector", "vision_tower"}
    given = {name for name in given if getattr(args, name)}
    if given - allowed:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in sorted(given - allowed))
        raise ValueError(f"{flags} not used with {args.source_format or args.target_format}")
    if args.projector and not args.tower_only:
        raise ValueError("--projector goes with --tower-only (a whole checkpoint carries its projector)")
    if args.source_format == "llava" and not args.vision_tower:
        raise ValueError("--from llava needs --vision-tower CLIP_DIR (LLaVA checkpoints name CLIP, nothing more)")


def run(args: argparse.Namespace) -> int:
    from .hf_llava import export_hf_llava
    from .llava import convert_llava
    from .official_piip import convert_official_projector, convert_official_tower, convert_piip_official
    from .remote_code import export_remote_code

    _check_flags(args)
    if args.target_format == "hf-llava":
        export_hf_llava(args.src, args.dst)
    elif args.target_format == "remote-code":
        export_remote_code(args.src, args.dst)
    elif args.source_format == "llava":
        convert_llava(args.src, args.dst, args.vision_tower, args.template)
    elif args.tower_only:
        convert_official_tower(args.src, args.dst, _vision_config(args), args.projector)
    elif args.projector_only:
        convert_official_projector(args.src, args.dst, _vision_config(args))
    else:
        convert_piip_official(args.src, args.dst, _vision_config(args), args.template)
    print(args.dst)
    return 0
