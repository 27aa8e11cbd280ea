"""piip_llava/train/plot.py and scripts/plot_loss.py"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from piip_llava.train.plot import plot_losses, read_losses

ROOT = Path(__file__).resolve().parents[2]


def test_plot_script_draws_the_curve(tmp_path):
    log = tmp_path / "log.jsonl"
    records = [{"step": s, "loss": 3.0 - 0.1 * s} for s in range(1, 11)] + [{"step": 10, "train_loss": 2.5}]
    log.write_text("\n".join(json.dumps(r) for r in records))
    subprocess.run([sys.executable, str(ROOT / "scripts/plot_loss.py"), str(tmp_path)], check=True)
    image = Image.open(tmp_path / "loss.png").convert("RGB")
    assert image.size == (800, 480)
    blue = [(x, y) for x in range(image.width) for y in range(image.height) if image.getpixel((x, y)) == (31, 119, 180)]
    assert blue, "no curve drawn"
    # A falling loss: the curve starts high on the left and ends low on the right.
    leftmost, rightmost = min(blue), max(blue)
    assert leftmost[1] < rightmost[1]


def test_resumed_logs_keep_the_last_value_and_short_logs_are_refused(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in [{"step": 1, "loss": 2}, {"step": 1, "loss": 1}]))
    assert read_losses(log) == [(1, 1.0)]
    with pytest.raises(ValueError, match="at least 2"):
        plot_losses(read_losses(log), tmp_path / "x.png")
