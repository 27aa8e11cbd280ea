"""Plot a run's loss curve to PNG.

python scripts/plot_loss.py checkpoints/stage2 [--output loss.png]
"""

import argparse
from pathlib import Path

from piip_llava.train.plot import plot_losses, read_losses

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a training output_dir (with log.jsonl) or the log.jsonl itself")
    parser.add_argument("--output", help="PNG path (default: <run>/loss.png)")
    args = parser.parse_args()
    run = Path(args.run)
    log = run / "log.jsonl" if run.is_dir() else run
    output = args.output or log.with_name("loss.png")
    print(plot_losses(read_losses(log), output, title=f"loss: {run.name}"))
