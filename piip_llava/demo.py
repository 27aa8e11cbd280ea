"""``piip-llava demo``: the synthetic quickstart, end to end on a laptop CPU, nothing downloaded.

The recipe is the paper's, in miniature: the parts start pretrained, as CLIP, ConvNeXt and Vicuna do (the committed
``playground/demo_parts``, made by ``scripts/pretrain_demo_parts.py`` on the scene world), stage 1 aligns the
projector alone, stage 2 tunes everything. Steps, each leaving a marker in ``OUTPUT/.done/`` so a rerun reuses what
is finished:

1. ``data``: synthetic scenes (:mod:`piip_llava.data.scene_sets`): stage-1 captions, the stage-2 instruction mix,
   TextVQA / small-text TextVQA / MMBench / POPE sets in the official formats (and the warm-up text of
   ``--from-scratch``).
2. ``build``: ``piip-llava build --tower demo-convnext-clip_128-64 --llm PARTS/llm --branch-weights
   clip=PARTS/branches/clip convnext=PARTS/branches/convnext``: the path a user takes with real checkpoints; the
   projector and the interactions (zero-gated) start random.
3. ``stage1``: ``piip-llava train`` on the captions (``plain`` template), projector only.
4. ``stage2``: ``piip-llava train`` on the instruction mix (``vicuna_v1``, ``pad`` images): projector, branches,
   interactions and LLM.
5. ``eval``: the evaluators of ``piip-llava eval run`` / ``score`` on the four sets.
6. ``report``: the results table (also ``results.md`` / ``results.json``) and the loss curve ``loss.png``.

``--from-scratch`` keeps the all-random path: a random tiny model, an LLM warm-up on text, stage 1 training the
projector, branches and LLM on the captions, then stage 2 (docs/quickstart.md has both recipes' results).

Then ``bash serve/launch_local.sh OUTPUT/stage2`` serves the model (skipped with ``--no-serve`` or
``DEMO_SERVE=0``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

DEMO_TOWER = "demo-convnext-clip_128-64"
DEMO_MODEL_NAME = "piip-llava-demo"
# The LLM: the tiny Llama widened and deepened enough to read the options of a multiple-choice question.
DEMO_LLM = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=2)  # fmt: skip
ALL_PARTS = "projector,vision_branches,interactions,llm"
# name -> (eval set folder, benchmark, question file, image folder, annotations)
EVAL_SETS = {
    "textvqa": ("textvqa", "textvqa", "llava_textvqa_val_v051_ocr.jsonl", "train_images", "TextVQA_0.5.1_val.json"),
    "textvqa_small": ("textvqa_small", "textvqa", "llava_textvqa_val_v051_ocr.jsonl", "train_images",
                      "TextVQA_0.5.1_val.json"),
    "mmbench": ("mmbench", "mmbench", "mmbench_dev_20230712.tsv", ".", "mmbench_dev_20230712.tsv"),
    "pope": ("pope", "pope", "llava_pope_test.jsonl", "val2014", "coco"),
}  # fmt: skip
EVAL_TITLES = {"textvqa": "TextVQA (synthetic, with OCR tokens)", "textvqa_small": "small-text OCR (no OCR tokens)",
               "mmbench": "MMBench (CircularEval)", "pope": "POPE (yes/no)"}  # fmt: skip


@dataclass(frozen=True)
class StageSpec:
    """One training stage of the quickstart: its data, template, image mode, what trains, for how long, how fast."""

    name: str
    data_file: str
    template: str
    aspect: str
    parts: str
    epochs: float
    learning_rate: float
    description: str


# The paper's recipe on the pretrained demo parts (scripts/pretrain_demo_parts.py): stage 1 aligns the projector
# alone on captions, stage 2 tunes everything on the instruction mix. Stage 1's rate is 3e-3 (LLaVA's is 1e-3 at
# batch 256 for thousands of steps): at 1e-3 the projector's 432 steps left the caption loss at 0.67 at seed 1, and
# small-text OCR at 16.0; at 3e-3, 0.33 and 41.0 (seed 0: 0.22 -> 0.19; docs/quickstart.md). Stage 1 runs two
# epochs: seed 1's caption loss was still falling at the end of one; with two it ends at 0.19 (0.33), and at seeds
# 0, 1, 2 small-text OCR rose to 62.0 / 66.0 / 68.5 (56.5 / 46.5 / 59.5), POPE to 71.3 on average (67.6), for
# about 70 s more on two cores. Stage 2 runs two epochs: against one, every score rose or held at each of seeds
# 0, 1, 2 (mean TextVQA +2.3, small-text OCR +4.7, MMBench +2.7, POPE +1.6), for about 3.5 more minutes.
PAPER_STAGES = [
    StageSpec("stage1", "pretrain.json", "plain", "square", "projector", 2.0, 3e-3,
              "stage 1: projector alignment on captions (plain template)"),
    StageSpec("stage2", "instruct.json", "vicuna_v1", "pad", ALL_PARTS, 2.0, 1e-3,
              "stage 2: instruction tuning, all parts (vicuna_v1)"),
]  # fmt: skip
# ``--from-scratch``: everything starts random, so an LLM warm-up comes first and stage 1 also trains the branches
# and the LLM (docs/quickstart.md, "From scratch").
SCRATCH_STAGES = [
    StageSpec("warmup", "warmup.json", "vicuna_v1", "pad", "llm", 1.0, 1e-3,
              "LLM warm-up on text (reading OCR-token lines, facts, option letters)"),
    StageSpec("stage1", "pretrain.json", "plain", "square", "projector,vision_branches,llm", 2.0, 1e-3,
              "stage 1: caption alignment (plain template)"),
    StageSpec("stage2", "instruct.json", "vicuna_v1", "pad", ALL_PARTS, 1.0, 1e-3,
              "stage 2: instruction tuning (vicuna_v1)"),
]  # fmt: skip
STAGE_NAMES = ("warmup", "stage1", "stage2")
# The committed pretrained parts (scripts/pretrain_demo_parts.py; command and seed in their parts.json).
DEMO_PARTS = Path(__file__).resolve().parents[1] / "playground" / "demo_parts"


@dataclass
class DemoConfig:
    """What a run builds and how long it trains. The defaults are the quickstart's."""

    output: Path = Path("playground/demo")
    data: Path | None = None  # default: OUTPUT/data; several runs can share one data folder
    seed: int = 0
    scale: float = 1.0  # multiplies every data set's size (the test uses a tiny fraction)
    tower: str = DEMO_TOWER
    from_scratch: bool = False  # random parts and the longer recipe instead of the pretrained parts
    parts_dir: Path = DEMO_PARTS
    # stage name -> value, overriding the stage's
    parts: dict[str, str] = field(default_factory=dict)
    epochs: dict[str, float] = field(default_factory=dict)
    learning_rates: dict[str, float] = field(default_factory=dict)
    batch_size: int = 16
    eval_batch_size: int = 32
    # set name -> samples, overriding SceneSetSizes' (after ``scale``)
    sizes: dict[str, int] = field(default_factory=dict)
    # batches of one modality and similar length (``--group_by_modality_length``): stage 2 ran 1.1-1.4x faster, and
    # the mean of the four scores was 1.0 point lower (-0.3 / -1.3 / -1.5 at seeds 0 / 1 / 2; docs/quickstart.md)
    group_by_length: bool = False
    serve: bool = True

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        self.data = Path(self.data) if self.data else self.output / "data"
        self.parts_dir = Path(self.parts_dir)

    @property
    def stages(self) -> list[StageSpec]:
        return SCRATCH_STAGES if self.from_scratch else PAPER_STAGES

    @property
    def base_model(self) -> Path:
        return self.output / "base"

    def stage_dir(self, stage: str) -> Path:
        return self.output / stage

    @property
    def final_model(self) -> Path:
        return self.stage_dir(self.stages[-1].name)

    def stage_parts(self, stage: StageSpec) -> str:
        return self.parts.get(stage.name, stage.parts)

    def stage_epochs(self, stage: StageSpec) -> float:
        return self.epochs.get(stage.name, stage.epochs)

    def stage_learning_rate(self, stage: StageSpec) -> float:
        return self.learning_rates.get(stage.name, stage.learning_rate)


def _sizes(scale: float, overrides: dict[str, int] | None = None):
    from piip_llava.data.scene_sets import SceneSetSizes

    sizes = {name: max(2, round(count * scale)) for name, count in dataclasses.asdict(SceneSetSizes()).items()}
    return SceneSetSizes(**{**sizes, **(overrides or {})})


def step_data(config: DemoConfig) -> dict:
    from piip_llava.data.scene_sets import SceneSetSizes, write_scene_sets

    marker = config.data / ".complete"  # shared data folders are written once
    sizes = dataclasses.asdict(_sizes(config.scale, config.sizes))
    if not marker.exists():
        write_scene_sets(config.data, config.seed, SceneSetSizes(**sizes))
        marker.write_text(json.dumps(sizes))
    written = json.loads(marker.read_text())
    if written != sizes:
        raise SystemExit(f"{config.data} holds data sets of other sizes ({written}); give another --data for {sizes}")
    return {"sizes": written}


def build_command(config: DemoConfig) -> list[str]:
    """The ``piip-llava build`` arguments that assemble the demo model from the pretrained parts, the way a user
    assembles CLIP, ConvNeXt and Vicuna (``--branch-weights`` / ``--llm``)."""
    from piip_llava.model.vision import get_tower_config

    tower = get_tower_config(config.tower)
    parts, branches = config.parts_dir / "branches", []
    for branch in tower.branches:
        # a part pretrained at the branch's own resolution (``clip_96`` for ``demo-clip_96``) if there is one
        own = parts / f"{branch.name}_{branch.image_size}"
        branches.append(f"{branch.name}={own if own.is_dir() else parts / branch.name}")
    # and an LLM part pretrained on the tower's own layout of visual tokens (``llm_144`` for a 12x12 grid), if any
    llm = config.parts_dir / f"llm_{tower.output_grids[-1] ** 2}"
    llm = llm if llm.is_dir() else config.parts_dir / "llm"
    return ["build", "--tower", config.tower, "--llm", str(llm), "--branch-weights", *branches,
            "--seed", str(config.seed), "--output", str(config.base_model)]  # fmt: skip


def step_build(config: DemoConfig) -> dict:
    from piip_llava.model.configuration_piip_llava import PiipLlavaConfig
    from piip_llava.model.vision.flops import count_tower_flops

    if config.from_scratch:
        from piip_llava.model.tiny import build_tiny_model

        model, processor = build_tiny_model(tower=config.tower, seed=config.seed, text_overrides=DEMO_LLM)
        model.save_pretrained(config.base_model)
        processor.save_pretrained(config.base_model)
        source = "random"
    else:
        from piip_llava.cli import main as cli_main

        if not (config.parts_dir / "parts.json").exists():
            raise FileNotFoundError(
                f"no pretrained demo parts in {config.parts_dir} (make them with "
                "`python scripts/pretrain_demo_parts.py`, or run `piip-llava demo --from-scratch`)"
            )
        command = build_command(config)
        logger.info("$ piip-llava %s", shlex.join(command))
        if cli_main(command) != 0:
            raise RuntimeError(f"piip-llava {shlex.join(command)} failed")
        source = str(config.parts_dir)
    model_config = PiipLlavaConfig.from_pretrained(config.base_model)
    flops = count_tower_flops(model_config.vision_config, config.tower)
    return {"tower": config.tower, "parts": source, "parameters_m": _parameter_count(config.base_model) / 1e6,
            "vision_mflops": 1000 * flops.vision_gflops, "visual_tokens": model_config.image_seq_length}  # fmt: skip


def _parameter_count(model_dir: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), "pt") as weights:
        return sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())


def train_command(config: DemoConfig, index: int) -> list[str]:
    """The `piip-llava train` command line of a stage (one CPU process, no DeepSpeed); each stage starts from the
    previous one's output."""
    stage, data, stages = config.stages[index], config.data, config.stages
    start = config.base_model if index == 0 else config.stage_dir(stages[index - 1].name)
    return [sys.executable, "-m", "piip_llava", "train", "--model_name_or_path", str(start),
            "--data_path", str(data / stage.data_file), "--image_folder", str(data / "images"),
            "--template", stage.template, "--image_aspect_ratio", stage.aspect,
            "--tunable_parts", config.stage_parts(stage), "--num_train_epochs", str(config.stage_epochs(stage)),
            "--per_device_train_batch_size", str(config.batch_size),
            "--learning_rate", str(config.stage_learning_rate(stage)),
            "--weight_decay", "0", "--warmup_steps", "0.03", "--lr_scheduler_type", "cosine",
            "--model_max_length", "512", "--use_cpu", "--report_to", "none", "--save_strategy", "no",
            "--logging_steps", "0.02", "--seed", str(config.seed), "--dataloader_num_workers", "0",
            "--output_dir", str(config.stage_dir(stage.name)), "--disable_tqdm", "False",
            "--group_by_modality_length", str(config.group_by_length)]  # fmt: skip


def run_stage(config: DemoConfig, index: int) -> dict:
    output = config.stage_dir(config.stages[index].name)
    if output.exists():  # an interrupted stage starts over (it saves no checkpoints: it takes minutes)
        shutil.rmtree(output)
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = train_command(config, index)
    logger.info("$ %s", shlex.join(command))
    subprocess.run(command, check=True, env=environment)
    from piip_llava.train.plot import read_losses

    losses = read_losses(output / "log.jsonl")
    return {"steps": losses[-1][0], "first_loss": losses[0][1], "last_loss": losses[-1][1]}


def step_eval(config: DemoConfig) -> dict:
    """Generation and scoring with the functions behind `piip-llava eval run` / `score`."""
    from piip_llava.eval.benchmarks import get_benchmark
    from piip_llava.eval.runner import run_questions
    from piip_llava.model.loading import load_for_inference

    model, processor = load_for_inference(config.final_model)
    scores = {}
    for name, (folder, benchmark_name, questions, images, annotation_file) in EVAL_SETS.items():
        benchmark, root = get_benchmark(benchmark_name), config.data / "eval" / folder
        answers = config.output / "answers" / f"{name}.jsonl"
        answers.unlink(missing_ok=True)
        logger.info("eval %s", EVAL_TITLES[name])
        run_questions(model, processor, benchmark.load(root / questions, root / images), answers, model.config.template,
                      batch_size=config.eval_batch_size, max_new_tokens=16, model_id=DEMO_MODEL_NAME)  # fmt: skip
        scores[name] = benchmark.score(answers, root / annotation_file, root / questions)
    return {"scores": scores}


def step_report(config: DemoConfig, results: dict) -> dict:
    from piip_llava.train.plot import plot_losses, read_losses

    points, spans = [], []
    for stage in config.stages:  # one curve, the stages end to end
        offset = points[-1][0] if points else 0
        losses = read_losses(config.stage_dir(stage.name) / "log.jsonl")
        points += [(step + offset, loss) for step, loss in losses]
        spans.append(f"{stage.name} {offset + 1}-{points[-1][0]}")
    loss_png = plot_losses(points, config.output / "loss.png", title="training loss by step: " + ", ".join(spans))
    table = results_table(results)
    (config.output / "results.md").write_text(table + "\n")
    (config.output / "results.json").write_text(json.dumps(results, indent=2))
    return {"table": table, "loss_png": str(loss_png)}


def results_table(results: dict) -> str:
    lines = ["| benchmark | accuracy | questions |", "|---|---|---|"]
    for name in EVAL_SETS:
        score = results["eval"]["scores"][name]
        count = (
            score.get("samples")
            or score.get("questions")
            or sum(c["samples"] for c in score.get("categories", {}).values())
        )
        extra = f" (F1 {score['f1']:.1f})" if "f1" in score else ""
        lines.append(f"| {EVAL_TITLES[name]} | {score['accuracy']:.1f}{extra} | {count} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class Step:
    name: str
    description: str
    run: Callable[[DemoConfig, dict], dict]


def demo_steps(config: DemoConfig) -> list[Step]:
    """The steps of a run: data, build, the recipe's training stages, eval, report."""
    build = ("random tiny PIIP-LLaVA with a local tokenizer" if config.from_scratch
             else f"PIIP-LLaVA from the pretrained demo parts in {config.parts_dir} (piip-llava build)")  # fmt: skip
    return [
        Step("data", "synthetic scenes: warm-up text, captions, instruction mix, evaluation sets",
             lambda c, r: step_data(c)),
        Step("build", build, lambda c, r: step_build(c)),
        *(Step(stage.name, f"{stage.description} (piip-llava train)", lambda c, r, i=index: run_stage(c, i))
          for index, stage in enumerate(config.stages)),
        Step("eval", "evaluation: TextVQA, small-text OCR, MMBench, POPE", lambda c, r: step_eval(c)),
        Step("report", "results table and loss curve", step_report),
    ]  # fmt: skip


def run_demo(config: DemoConfig) -> dict:
    """Run (or reuse) every step; returns each step's result with its ``seconds``."""
    done = config.output / ".done"
    done.mkdir(parents=True, exist_ok=True)
    recipe, recipe_file = ("from-scratch" if config.from_scratch else "pretrained-parts"), done / "recipe"
    if recipe_file.exists() and recipe_file.read_text() != recipe:
        raise SystemExit(f"{config.output} holds a {recipe_file.read_text()} run; give another --output for a "
                         f"{recipe} run (or delete the folder)")  # fmt: skip
    recipe_file.write_text(recipe)
    steps = demo_steps(config)
    results, started = {}, time.time()
    for number, step in enumerate(steps, start=1):
        marker = done / f"{step.name}.json"
        prefix = f"[{number}/{len(steps)}] {step.name}"
        if marker.exists():
            results[step.name] = json.loads(marker.read_text())
            logger.info("%s: done in an earlier run (%.0f s), reused", prefix, results[step.name]["seconds"])
            continue
        logger.info("%s: %s …", prefix, step.description)
        step_start = time.time()
        results[step.name] = {**step.run(config, results), "seconds": time.time() - step_start}
        marker.write_text(json.dumps(results[step.name]))
        logger.info("%s: done in %.0f s (%.0f s so far)", prefix, results[step.name]["seconds"],
                    time.time() - started)  # fmt: skip
    return results


def serve(model_dir: Path) -> int:
    script = Path("serve/launch_local.sh")
    if not script.exists():
        logger.warning("%s not found: run from the repository root to serve the model (%s)", script, model_dir)
        return 0
    try:
        return subprocess.run(["bash", str(script), str(model_dir), "--model-name", DEMO_MODEL_NAME]).returncode
    except KeyboardInterrupt:
        return 0


def main(config: DemoConfig) -> int:
    results = run_demo(config)
    build = results["build"]
    recipe = "from scratch" if config.from_scratch else f"from the pretrained parts in {config.parts_dir}"
    print(f"\nPIIP-LLaVA demo ({recipe}, seed {config.seed}): {build['tower']} tower "
          f"({build['vision_mflops']:.1f} MFLOPs, {build['visual_tokens']} visual tokens), "
          f"{build['parameters_m']:.1f} M parameters")  # fmt: skip
    print(results["report"]["table"])
    total = sum(result["seconds"] for result in results.values())
    print(f"loss curve: {results['report']['loss_png']}; trained model: {config.final_model}; "
          f"steps took {total:.0f} s in all")  # fmt: skip
    if config.serve:
        return serve(config.final_model)
    return 0


def add_arguments(parser) -> None:
    defaults = DemoConfig()
    parser.add_argument("--output", default=str(defaults.output), help="run folder (a rerun reuses finished steps)")
    parser.add_argument("--data", help="data folder (default OUTPUT/data); runs may share one")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--scale", type=float, default=defaults.scale, help="multiply every data set's size")
    parser.add_argument("--tower", default=defaults.tower, help="tower preset (piip-llava flops --list)")
    parser.add_argument(
        "--from-scratch",
        action="store_true",
        help="start every part random (LLM warm-up, then stage 1 also trains the branches and LLM) "
        "instead of from the pretrained demo parts",
    )
    parser.add_argument(
        "--parts-dir", default=str(defaults.parts_dir), help="pretrained demo parts (scripts/pretrain_demo_parts.py)"
    )
    stage_names = ", ".join(STAGE_NAMES)
    parser.add_argument(
        "--parts",
        action="append",
        default=[],
        metavar="STAGE=PARTS",
        help=f"tunable parts of a stage ({stage_names}), e.g. stage2=projector,vision_branches,llm",
    )
    epochs = ", ".join(f"{stage.name}={stage.epochs:g}" for stage in PAPER_STAGES)
    parser.add_argument(
        "--epochs",
        action="append",
        default=[],
        metavar="STAGE=N",
        help=f"epochs of a stage (defaults: {epochs}; from scratch: warmup=1, stage1=2, stage2=1)",
    )
    rates = ", ".join(f"{stage.name}={stage.learning_rate:g}" for stage in PAPER_STAGES)
    parser.add_argument(
        "--learning-rate",
        action="append",
        default=[],
        metavar="STAGE=LR",
        help=f"peak learning rate of a stage (defaults: {rates}; from scratch: 1e-3)",
    )
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument(
        "--size",
        action="append",
        default=[],
        metavar="SET=N",
        help="samples of a data set (warmup, pretrain, instruct, textvqa, textvqa_small, mmbench, pope), after --scale",
    )
    parser.add_argument(
        "--group-by-length",
        action="store_true",
        help="batches of one modality and similar length (--group_by_modality_length): faster, not the default",
    )
    parser.add_argument("--no-serve", action="store_true", help="do not start the local serving stack at the end "
                        "(also DEMO_SERVE=0)")  # fmt: skip


def name_values(pairs: list[str], names, convert, what: str = "STAGE") -> dict:
    """``["stage2=5e-4"]`` -> ``{"stage2": convert("5e-4")}``; a name outside ``names`` or an empty value exits
    with a usage message (``what`` names the kind of name: STAGE, KIND, ...)."""
    values = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in names or not value:
            raise SystemExit(f"expected {what}=VALUE with {what} in {', '.join(names)}, got {pair!r}")
        values[name] = convert(value)
    return values


def _stage_values(pairs: list[str], convert) -> dict:
    return name_values(pairs, list(STAGE_NAMES), convert)


def run(args) -> int:
    from piip_llava.data.scene_sets import SceneSetSizes

    config = DemoConfig(
        output=Path(args.output),
        data=Path(args.data) if args.data else None,
        seed=args.seed,
        scale=args.scale,
        tower=args.tower,
        parts=_stage_values(args.parts, str),
        epochs=_stage_values(args.epochs, float),
        from_scratch=args.from_scratch,
        parts_dir=Path(args.parts_dir),
        learning_rates=_stage_values(args.learning_rate, float),
        batch_size=args.batch_size,
        sizes=name_values(args.size, [f.name for f in dataclasses.fields(SceneSetSizes)], int, "SET"),
        group_by_length=args.group_by_length,
        serve=not args.no_serve and os.environ.get("DEMO_SERVE", "1") != "0",
    )
    return main(config)
