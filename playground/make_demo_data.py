"""Write the quickstart's synthetic data: stage-1 captions, the stage-2 instruction mix, and TextVQA / small-text /
MMBench / POPE evaluation sets in the official formats (piip_llava/data/scene_sets.py).

python playground/make_demo_data.py playground/demo/data [--seed 0] [--scale 1.0]
"""

import argparse
import dataclasses

from piip_llava.data.scene_sets import SceneSetSizes, write_scene_sets

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every set's size (0.1 for a quick look)")
    args = parser.parse_args()
    sizes = {k: max(2, round(v * args.scale)) for k, v in dataclasses.asdict(SceneSetSizes()).items()}
    for name, path in write_scene_sets(args.folder, args.seed, SceneSetSizes(**sizes)).items():
        print(f"{name:14s} {path}")
