"""Table and plot of the pyramid-vs-single runs (scripts/experiments/pyramid_vs_single.sh).

python scripts/experiments/report_pyramid_vs_single.py RUNS_DIR [--plot docs/pyramid_vs_single.png]

Reads RUNS_DIR/seed*/{piip,single,no_interactions,single_llm64}/results.json; prints a Markdown table (mean over
seeds, and each seed), MMBench by category, and draws accuracy against vision FLOPs.
"""

import argparse
import json
import statistics
from pathlib import Path

from PIL import Image, ImageDraw

ARMS = {
    "piip": "(a) PIIP: ViT @64 + ConvNeXt @128, interactions",
    "single": "(b) single ViT @96",
    "no_interactions": "(c) PIIP without interactions",
    # (b) with the LLM part pretrained on the pyramid's 8x8 layout instead of its own 12x12 one
    "single_llm64": "(b') single ViT @96, the pyramid's LLM part",
}
COLUMNS = {"textvqa_small": "small-text OCR", "textvqa": "TextVQA", "mmbench": "MMBench", "pope": "POPE"}
COLOURS = {"piip": (31, 119, 180), "single": (214, 39, 40), "no_interactions": (44, 160, 44),
           "single_llm64": (255, 127, 14)}  # fmt: skip
RINGS = ("no_interactions", "single_llm64")  # drawn as rings, so that they show where they overlap a dot


def read_runs(root: Path) -> dict[str, list[dict]]:
    runs = {arm: [] for arm in ARMS}
    for seed_dir in sorted(root.glob("seed*")):
        for arm in ARMS:
            path = seed_dir / arm / "results.json"
            if path.exists():
                results = json.loads(path.read_text())
                scores = {name: results["eval"]["scores"][name]["accuracy"] for name in COLUMNS}
                scores["overall"] = statistics.mean(scores.values())
                scores["mmbench_categories"] = results["eval"]["scores"]["mmbench"].get("categories", {})
                runs[arm].append({"seed": seed_dir.name, "mflops": results["build"]["vision_mflops"],
                                  "tokens": results["build"]["visual_tokens"], **scores})  # fmt: skip
    return {arm: rows for arm, rows in runs.items() if rows}


def table(runs: dict[str, list[dict]]) -> str:
    names = [*COLUMNS, "overall"]
    header = (
        "| tower | vision MFLOPs | visual tokens | " + " | ".join([*COLUMNS.values(), "mean of four"]) + " | seeds |"
    )
    lines = [header, "|" + "---|" * (len(names) + 4)]
    for arm, rows in runs.items():
        cells = []
        for name in names:
            values = [row[name] for row in rows]
            cells.append(f"**{statistics.mean(values):.1f}**" + (f" ({' / '.join(f'{v:.1f}' for v in values)})"
                                                                   if len(values) > 1 else ""))  # fmt: skip
        lines.append(f"| {ARMS[arm]} | {rows[0]['mflops']:.1f} | {rows[0]['tokens']} | " + " | ".join(cells)
                     + f" | {len(rows)} |")  # fmt: skip
    return "\n".join(lines)


def category_table(runs: dict[str, list[dict]]) -> str:
    """MMBench by category (CircularEval), mean over each arm's seeds: where a tower's MMBench comes from."""
    names = sorted({name for rows in runs.values() for row in rows for name in row["mmbench_categories"]})
    lines = ["| tower | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for arm, rows in runs.items():
        cells = [statistics.mean(row["mmbench_categories"].get(name, 0.0) for row in rows) for name in names]
        lines.append(f"| {ARMS[arm]} | " + " | ".join(f"{cell:.1f}" for cell in cells) + " |")
    return "\n".join(lines)


def plot(runs: dict[str, list[dict]], output: Path) -> None:
    """Two panels (small-text OCR, mean of four): accuracy (y) against vision MFLOPs (x), one dot per run."""
    width, height, margin = 900, 440, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    flops = [row["mflops"] for rows in runs.values() for row in rows]
    low, high = min(flops) * 0.9, max(flops) * 1.1
    panel = (width - margin) // 2
    for index, (name, title) in enumerate([("textvqa_small", "small-text OCR accuracy"), ("overall", "mean of four")]):
        left, right, top, bottom = margin + index * panel, (index + 1) * panel, margin, height - 80
        draw.rectangle([left, top, right, bottom], outline="black")
        draw.text((left, top - 30), f"{title} (%) vs vision MFLOPs", fill="black")
        for tick in (0, 50, 100):
            y = bottom - tick / 100 * (bottom - top)
            draw.text((left - 28, y - 6), str(tick), fill="black")
            draw.line([left, y, right, y], fill=(225, 225, 225))
        draw.text((left, bottom + 8), f"{low:.1f}", fill="black")
        draw.text((right - 40, bottom + 8), f"{high:.1f}", fill="black")
        if name == "textvqa_small":  # chance: one of the 24 scene words
            y = bottom - 100 / 24 / 100 * (bottom - top)
            for x in range(left, right, 12):
                draw.line([x, y, x + 6, y], fill=(120, 120, 120))
            draw.text((right - 70, y - 14), "chance 4.2", fill=(120, 120, 120))
        for arm, rows in runs.items():
            for row in rows:
                x = left + (row["mflops"] - low) / (high - low) * (right - left)
                y = bottom - row[name] / 100 * (bottom - top)
                if arm in RINGS:
                    draw.ellipse([x - 8, y - 8, x + 8, y + 8], outline=COLOURS[arm], width=2)
                else:
                    draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=COLOURS[arm])
    for index, arm in enumerate(runs):
        x, y = margin + index % 2 * 400, height - 44 + index // 2 * 20
        if arm in RINGS:
            draw.ellipse([x, y, x + 10, y + 10], outline=COLOURS[arm], width=2)
        else:
            draw.rectangle([x, y, x + 10, y + 10], fill=COLOURS[arm])
        draw.text((x + 16, y - 2), ARMS[arm], fill="black")
    image.save(output)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--plot", type=Path, help="PNG path for the plot")
    args = parser.parse_args()
    runs = read_runs(args.runs)
    if not runs:
        raise SystemExit(f"no results.json under {args.runs}/seed*/")
    print(table(runs))
    print("\nMMBench by category, mean over seeds:\n")
    print(category_table(runs))
    if args.plot:
        plot(runs, args.plot)
        print(f"plot: {args.plot}")
