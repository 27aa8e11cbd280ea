"""Plot the loss curve of a run (``output_dir/log.jsonl``) to a PNG, with PIL only."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

WIDTH, HEIGHT, MARGIN = 800, 480, 60


def read_losses(log_path: str | Path) -> list[tuple[int, float]]:
    """``(step, loss)`` pairs; a resumed run re-logs some steps, the last value of each step wins."""
    losses = {}
    for line in Path(log_path).read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            losses[record["step"]] = float(record["loss"])
    return sorted(losses.items())


def plot_losses(points: list[tuple[int, float]], output: str | Path, title: str = "training loss") -> Path:
    if len(points) < 2:
        raise ValueError(f"need at least 2 logged losses to plot, got {len(points)}")
    steps, losses = zip(*points)
    low, high = min(losses), max(losses)
    span = (high - low) or 1.0
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = MARGIN, MARGIN, WIDTH - MARGIN // 2, HEIGHT - MARGIN
    draw.rectangle([left, top, right, bottom], outline="black")

    def xy(step: int, loss: float) -> tuple[float, float]:
        x = left + (step - steps[0]) / max(steps[-1] - steps[0], 1) * (right - left)
        return x, bottom - (loss - low) / span * (bottom - top)

    for fraction in (0.0, 0.5, 1.0):
        y = bottom - fraction * (bottom - top)
        draw.line([left - 4, y, left, y], fill="black")
        draw.text((4, y - 6), f"{low + fraction * span:.3f}", fill="black")
    draw.text((left, bottom + 8), f"step {steps[0]}", fill="black")
    draw.text((right - 70, bottom + 8), f"step {steps[-1]}", fill="black")
    draw.text((left, top - 24), title, fill="black")
    draw.line([xy(s, v) for s, v in points], fill=(31, 119, 180), width=2)
    image.save(output)
    return Path(output)
