"""Turn LLaVA's TextVQA files (question JSONL with OCR lines + official annotation JSON + images) into a parquet
and a ready task folder for lmms-eval (offline).

    python eval/lmms_eval_tasks/textvqa_local/make_textvqa_local.py \\
        llava_textvqa_val_v051_ocr.jsonl TextVQA_0.5.1_val.json train_images out/textvqa_local
"""

import argparse
import json
import shutil
from pathlib import Path

import datasets

HERE = Path(__file__).resolve().parent


def build(questions: Path, annotations: Path, images: Path, output: Path) -> Path:
    truth = {(a["image_id"], a["question"].lower()): a for a in json.loads(annotations.read_text())["data"]}
    rows = {"question_id": [], "question": [], "ocr_tokens": [], "answers": [], "image": []}
    for line in questions.read_text().splitlines():
        record = json.loads(line)
        lines = record["text"].split("\n")
        question = lines[0]
        ocr = lines[1].removeprefix("Reference OCR token: ").split(", ") if len(lines) == 3 else []
        annotation = truth[(str(record["question_id"]), question.lower())]
        rows["question_id"].append(str(record["question_id"]))
        rows["question"].append(question)
        rows["ocr_tokens"].append(ocr)
        rows["answers"].append(annotation["answers"])
        rows["image"].append(str(images / record["image"]))
    output.mkdir(parents=True, exist_ok=True)
    dataset = datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image())
    parquet = output / "textvqa_local.parquet"
    dataset.to_parquet(str(parquet))
    shutil.copy(HERE / "utils.py", output / "utils.py")
    template = (HERE / "textvqa_local.yaml.template").read_text()
    (output / "textvqa_local.yaml").write_text(template.replace("__PARQUET__", str(parquet.resolve())))
    return output


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("questions", type=Path)
    parser.add_argument("annotations", type=Path)
    parser.add_argument("images", type=Path)
    parser.add_argument("output", type=Path)
    args = parser.parse_args()
    print(build(args.questions, args.annotations, args.images, args.output))
