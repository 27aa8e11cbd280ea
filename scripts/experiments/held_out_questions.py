"""Held-out scenes and one question each, for asking a served model by hand or in the browser
(``scripts/web_demo_check.py``): a count, a colour, a reading (the only word, no OCR line) and a yes/no presence
question. The scenes come from ``random.Random("web-check")``, a stream no data set uses; for each kind the first
scene drawn that allows the question is taken, so nothing is picked by its answer.

    python scripts/experiments/held_out_questions.py --output /tmp/held_out     # PNGs + questions.json
"""

import argparse
import json
import random
from pathlib import Path

from piip_llava.data import scenes
from piip_llava.data.scene_sets import TRAIN_SCENE, scene_with_items
from piip_llava.eval.benchmarks import SHORT_ANSWER

KINDS = ("count", "color", "reading", "presence")


def candidates(kind: str, scene, rng: random.Random) -> list[scenes.QA]:
    if kind == "count":
        return [qa for qa in scenes.shape_questions(scene, rng) if qa.category == "count"]
    if kind == "color":
        return [qa for qa in scenes.shape_questions(scene, rng) if qa.category == "color"]
    if kind == "reading":
        return [qa for qa in scenes.word_questions(scene, rng) if qa.question == "What word is written in the image?"]
    return [scenes.presence_question(scene, rng)]


def held_out_questions(output: Path, seed: str = "web-check") -> list[dict]:
    rng, rows = random.Random(seed), []
    output.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        while not (found := candidates(kind, scene := scene_with_items(rng, TRAIN_SCENE), rng)):
            pass
        image = output / f"{kind}.png"
        scenes.render_scene(scene).save(image)
        rows.append({"kind": kind, "image": str(image), "question": f"{found[0].question}\n{SHORT_ANSWER}",
                     "answer": found[0].answer, "caption": scenes.caption(scene)})  # fmt: skip
    (output / "questions.json").write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    for row in held_out_questions(args.output):
        print(f"{row['kind']}: {row['image']} | {row['question'].splitlines()[0]} -> {row['answer']}")
