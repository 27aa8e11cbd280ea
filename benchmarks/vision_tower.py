"""Vision-tower speed on CPU: PIIP vs a single-branch tower, and deformable sampling vs the textbook version.

Measures, in one run and interleaved (A, B, A, B, …) so machine noise hits both sides alike:
1. fp32 batch-1 forward latency of the full-size PIIP ``clip-bl_512-256`` tower and of the LLaVA-1.5
   single-branch CLIP-L/14@336 tower (random weights), with their FLOPs ratio;
2. the deformable sampling of every interaction shape of chosen presets, ours (``deformable_sample``) vs
   Deformable-DETR's ``grid_sample`` formulation, with the max abs difference.

    python benchmarks/vision_tower.py [--repeats 5] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import time

import torch

from piip_llava.model.vision import PiipVisionModel, get_tower_config
from piip_llava.model.vision.deformable_attention import deformable_sample, deformable_sample_grid
from piip_llava.model.vision.flops import count_tower_flops

PIIP_PRESET = "piip-llava_clip-bl_512-256_7B"
SINGLE_PRESET = "llava-1.5_clip-l_336"
DEFORMABLE_PRESETS = ["piip-llava_clip-bl_512-256_7B", "piip-llava_convnext-b_clip-l_1024-336_7B"]


def interleaved_samples(functions: dict, repeats: int, min_sample_seconds: float = 0.02) -> dict[str, list[float]]:
    """Seconds per call of each zero-argument function, sampled in alternation (A, B, A, B, …).

    Like ``timeit``, a sample times a loop of calls long enough (``min_sample_seconds``) that sub-millisecond
    kernels are not lost in timer and scheduler noise.
    """
    loops = {}
    for name, function in functions.items():
        start = time.perf_counter()
        function()  # warm-up, and a first estimate of the cost
        loops[name] = max(1, int(min_sample_seconds / max(time.perf_counter() - start, 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            for _ in range(loops[name]):
                function()
            samples[name].append((time.perf_counter() - start) / loops[name])
    return samples


def interleaved_medians(functions: dict, repeats: int) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in interleaved_samples(functions, repeats).items()}


def tower_latency(repeats: int) -> dict:
    towers, inputs = {}, {}
    for preset in (PIIP_PRESET, SINGLE_PRESET):
        config = get_tower_config(preset)
        towers[preset] = PiipVisionModel(config).eval()
        inputs[preset] = torch.randn(1, 3, config.image_size, config.image_size)

    def forward(preset):
        def run():
            with torch.inference_mode():
                towers[preset](inputs[preset])

        return run

    samples = interleaved_samples({preset: forward(preset) for preset in towers}, repeats)
    median = {preset: statistics.median(values) for preset, values in samples.items()}
    best = {preset: min(values) for preset, values in samples.items()}
    flops = {preset: count_tower_flops(get_tower_config(preset)).vision_gflops for preset in towers}
    return {
        "piip_preset": PIIP_PRESET,
        "single_preset": SINGLE_PRESET,
        "piip_ms": median[PIIP_PRESET] * 1e3,
        "single_ms": median[SINGLE_PRESET] * 1e3,
        "piip_min_ms": best[PIIP_PRESET] * 1e3,
        "single_min_ms": best[SINGLE_PRESET] * 1e3,
        "latency_ratio": median[PIIP_PRESET] / median[SINGLE_PRESET],
        "latency_ratio_min": best[PIIP_PRESET] / best[SINGLE_PRESET],
        "flops_ratio": flops[PIIP_PRESET] / flops[SINGLE_PRESET],
    }


def interaction_shapes(preset: str) -> list[dict]:
    """(query grid, key grid, heads, head width) of both directions of every distinct interaction, with
    ``count``: how many sampling calls of that shape one forward of the tower makes."""
    config = get_tower_config(preset)
    heads, points = config.deform_num_heads, config.deform_num_points
    shapes = []
    for i in range(config.num_interactions):
        large, small = config.branches[0], config.branches[1]
        grids = [b.image_size // b.interaction_strides()[i] for b in (large, small)]
        dims = [b.interaction_dims()[i] for b in (large, small)]
        for query, key in ((0, 1), (1, 0)):
            head_dim = int(dims[query] * config.deform_ratio) // heads
            shape = dict(preset=preset, query_grid=grids[query], key_grid=grids[key], heads=heads, head_dim=head_dim,
                         points=points)  # fmt: skip
            for known in shapes:
                if all(known[key] == value for key, value in shape.items()):
                    known["count"] += 1
                    break
            else:
                shapes.append(dict(shape, count=1))
    return shapes


def deformable_speed(repeats: int) -> list[dict]:
    rows = []
    for preset in DEFORMABLE_PRESETS:
        for shape in interaction_shapes(preset):
            queries, keys = shape["query_grid"] ** 2, shape["key_grid"] ** 2
            heads, head_dim, points = shape["heads"], shape["head_dim"], shape["points"]
            value = torch.randn(1, keys, heads, head_dim)
            locations = torch.rand(1, queries, heads, points, 2) * 1.2 - 0.1
            weights = torch.rand(1, queries, heads, points).softmax(-1)
            grid = (shape["key_grid"], shape["key_grid"])
            ours = deformable_sample(value, grid, locations, weights)
            reference = deformable_sample_grid(value, grid, locations, weights)
            seconds = interleaved_medians(
                {
                    "ours": functools.partial(deformable_sample, value, grid, locations, weights),
                    "reference": functools.partial(deformable_sample_grid, value, grid, locations, weights),
                },
                repeats,
            )
            rows.append(
                dict(
                    shape,
                    ours_ms=seconds["ours"] * 1e3,
                    reference_ms=seconds["reference"] * 1e3,
                    speedup=seconds["reference"] / seconds["ours"],
                    max_abs_diff=(ours - reference).abs().max().item(),
                )  # fmt: skip
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    machine = f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}"
    print(f"# vision tower benchmark ({machine})\n")
    latency = tower_latency(args.repeats)
    print("| tower | fp32 bs1 forward, median | min |\n|---|---|---|")
    print(f"| {latency['piip_preset']} | {latency['piip_ms']:.0f} ms | {latency['piip_min_ms']:.0f} ms |")
    print(f"| {latency['single_preset']} | {latency['single_ms']:.0f} ms | {latency['single_min_ms']:.0f} ms |")
    print(
        f"\nlatency ratio PIIP / single = {latency['latency_ratio']:.3f} (median), "
        f"{latency['latency_ratio_min']:.3f} (min); FLOPs ratio {latency['flops_ratio']:.3f}\n"
    )
    rows = deformable_speed(args.repeats * 2)
    print(
        "| preset | query grid | key grid | heads x width | calls | ours ms | reference ms | speedup | max abs diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['preset']} | {row['query_grid']}² | {row['key_grid']}² | {row['heads']}x{row['head_dim']} | "
            f"{row['count']} | {row['ours_ms']:.2f} | {row['reference_ms']:.2f} | {row['speedup']:.2f}x | "
            f"{row['max_abs_diff']:.1e} |"
        )
    totals = {}
    for preset in DEFORMABLE_PRESETS:
        ours = sum(r["ours_ms"] * r["count"] for r in rows if r["preset"] == preset)
        reference = sum(r["reference_ms"] * r["count"] for r in rows if r["preset"] == preset)
        totals[preset] = {"ours_ms": ours, "reference_ms": reference, "speedup": reference / ours}
        print(f"\n{preset}: all deformable sampling of one forward: {ours:.1f} ms vs {reference:.1f} ms "
              f"reference ({reference / ours:.2f}x)")  # fmt: skip
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": machine, "tower": latency, "deformable": rows, "totals": totals}, handle, indent=2)


if __name__ == "__main__":
    main()
