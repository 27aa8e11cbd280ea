"""Small files shaped field for field like the official benchmark files and LLaVA's answer files.

Shapes as the real files have them: LLaVA's ``eval.zip`` question files (``llava_textvqa_val_v051_ocr.jsonl``:
``question_id`` is the 16-hex TextVQA image id, shared by that image's questions, plus ``category: "default"``;
``llava_pope_test.jsonl``: int ids, adversarial from 1, random from 10,000,001, popular from 20,000,001; MME's ids
are image paths), the benchmarks' own annotation files, and the answer lines LLaVA's ``model_vqa_loader`` /
``model_vqa_science`` / ``model_vqa_mmbench`` write (``answer_id``, ``model_id``, empty ``metadata``).
"""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

from PIL import Image

SHORT = "Answer the question using a single word or phrase."
LETTER = "Answer with the option's letter from the given choices directly."


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def llava_answer(question_id, prompt: str, text: str, number: int, **extra) -> dict:
    """One line as LLaVA's ``model_vqa_*`` writes it (``answer_id`` is a shortuuid there)."""
    return {"question_id": question_id, **extra, "prompt": prompt, "text": text, "answer_id": f"uuid{number:06d}",
            "model_id": "llava-v1.5-13b", "metadata": {}}  # fmt: skip


# --- TextVQA: 7 images x 3 questions, one image id shared by its questions -----------------------------------------

TEXTVQA_IMAGES = ["003a8ae2ef43b901", "831bcec304a17054", "181f00d3ee2b2076", "97b1112b17015396",
                  "5ce862cbefd8458f", "fa9ffd5aca1e4e51", "40c6b4dd3caa006f"]  # fmt: skip
TEXTVQA_QUESTIONS = ["What is the brand of this camera?", "What color is the text?", "How many items are there?"]
# (10 annotator answers, the model's answer) per question, image-major: exact, normalised, partial and wrong hits.
TEXTVQA_CASES = [
    (["dakota"] * 8 + ["dakota digital"] * 2, "Dakota"), (["red"] * 2 + ["orange"] * 8, "red"),
    (["2"] * 10, "two"), (["glenmorangie"] * 3 + ["morangie"] * 7, "Glenmorangie."), (["white"] * 10, "black"),
    (["10"] * 5 + ["ten"] * 5, "10"), (["no"] * 1 + ["yes"] * 9, "No"), (["casio"] * 4 + ["g-shock"] * 6, "G-Shock"),
    (["3"] * 10, "3 items"), (["the end"] * 6 + ["end"] * 4, "end"), (["unanswerable"] * 10, "unanswerable"),
    (["4"] * 9 + ["four"], "Four"), (["denny's"] * 10, "dennys"), (["yellow"] * 10, "Yellow"),
    (["1"] * 10, "one"), (["skoal"] * 10, "skoal"), (["1.99"] * 7 + ["$1.99"] * 3, "$1.99"),
    (["6"] * 10, "6"), (["pillsbury"] * 10, "Pillsbury"), (["3/$5"] * 10, "3/$5"), (["$2.39"] * 10, "2.39"),
]  # fmt: skip


def write_textvqa(folder: Path) -> tuple[Path, Path, Path]:
    """``(llava_textvqa_val_v051_ocr.jsonl, TextVQA_0.5.1_val.json, LLaVA's answers)``; the fourth image has no
    OCR tokens (an empty "Reference OCR token: " line, as in the real file)."""
    questions, data, answers = [], [], []
    for number, (truth, prediction) in enumerate(TEXTVQA_CASES):
        image_id, question = TEXTVQA_IMAGES[number // 3], TEXTVQA_QUESTIONS[number % 3]
        tokens = "" if number // 3 == 3 else "DAKOTA, DIGITAL, Single-Use, 22"
        text = f"{question}\nReference OCR token: {tokens}\n{SHORT}"
        questions.append({"question_id": image_id, "image": f"{image_id}.jpg", "text": text, "category": "default"})
        data.append({"question": question, "image_id": image_id, "image_classes": ["Camera"],
                     "flickr_original_url": f"https://farm2.staticflickr.com/{image_id}_o.jpg",
                     "flickr_300k_url": f"https://c4.staticflickr.com/{image_id}_z.jpg", "image_width": 1024,
                     "image_height": 664, "answers": truth, "question_tokens": question.lower().split(),
                     "question_id": 34602 + number, "set_name": "val"})  # fmt: skip
        answers.append(llava_answer(image_id, text, prediction, number))
    annotations = {"dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1", "data": data}
    (folder / "TextVQA_0.5.1_val.json").write_text(json.dumps(annotations))
    return (write_jsonl(folder / "llava_textvqa_val_v051_ocr.jsonl", questions), folder / "TextVQA_0.5.1_val.json",
            write_jsonl(folder / "answers" / "llava-v1.5-13b.jsonl", answers))  # fmt: skip


# --- POPE: 3 categories x 6 questions on 2 images ------------------------------------------------------------------

POPE_OFFSETS = {"adversarial": 0, "random": 10_000_000, "popular": 20_000_000}
POPE_OBJECTS = ["snowboard", "backpack", "person", "car", "dog", "umbrella"]
POPE_LABELS = {"adversarial": "yyynnn", "random": "ynynyn", "popular": "yynnny"}
POPE_TEXTS = {"adversarial": ["Yes", "No", "Yes, there is a person.", "No", "Yes", "No, there is not."],
              "random": ["Yes", "Yes", "There is no car", "No.", "yes", "I do not see one. Yes."],
              "popular": ["Yes", "No, not really", "Yes", "no", "Yes", "Yes, there is."]}  # fmt: skip


def write_pope(folder: Path) -> tuple[Path, Path, Path]:
    """``(llava_pope_test.jsonl, coco/ with coco_pope_{adversarial,popular,random}.json, LLaVA's answers)``."""
    questions, answers = [], []
    for category, offset in POPE_OFFSETS.items():
        labels = []
        for k, (item, label) in enumerate(zip(POPE_OBJECTS, POPE_LABELS[category]), 1):
            image = f"COCO_val2014_00000031019{k // 4}.jpg"
            article = "an" if item[0] in "aeiou" else "a"
            question = f"Is there {article} {item} in the image?"
            labels.append(
                {"question_id": k, "image": image, "text": question, "label": "yes" if label == "y" else "no"}
            )
            text = f"{question}\n{SHORT}"
            questions.append({"question_id": offset + k, "image": image, "text": text, "category": category})
            answers.append(llava_answer(offset + k, text, POPE_TEXTS[category][k - 1], len(answers)))
        write_jsonl(folder / "coco" / f"coco_pope_{category}.json", labels)
    return (write_jsonl(folder / "llava_pope_test.jsonl", questions), folder / "coco",
            write_jsonl(folder / "answers" / "llava-v1.5-13b.jsonl", answers))  # fmt: skip


# --- ScienceQA: problems.json + pid_splits.json + LLaVA's CQM-A question file ---------------------------------------

# (id, choices, answer index, has image, split, the model's text)
SCIENCEQA_CASES = [
    ("4", ["chiasmus", "apostrophe"], 1, False, "test", "B"),
    ("5", ["if damaged", "how steady", "whether it swings"], 1, True, "test", "B. how steady"),
    ("11", ["Maryland", "New Hampshire", "Rhode Island", "Vermont"], 1, True, "test", "The answer is B."),
    ("15", ["no", "yes"], 0, False, "test", "(A)"),
    ("23", ["bilberry", "mushroom"], 1, True, "test", "C"),
    ("42", ["0:4", "4:0", "2:2", "1:3", "3:1"], 1, True, "test", "B"),
    ("46", ["shiny", "slippery", "opaque"], 2, True, "test", "The answer is C. The answer is A."),
    ("61", ["same", "smaller in 1", "smaller in 2"], 2, True, "test", "c"),
    ("62", ["Phoenix", "Baton Rouge", "Honolulu", "Cheyenne"], 3, True, "test", "D"),
    ("7", ["a", "b"], 0, True, "train", None),
]  # fmt: skip


def write_scienceqa(folder: Path) -> tuple[Path, Path, Path]:
    """``(llava_test_CQM-A.json, problems.json (pid_splits.json beside it), LLaVA's answers)``."""
    problems, splits, records, answers = {}, {"train": [], "val": [], "test": [], "minival": [], "minitest": []}, [], []
    for pid, choices, answer, has_image, split, text in SCIENCEQA_CASES:
        question = f"Which of these is right for problem {pid}?"
        problems[pid] = {"question": question, "choices": choices, "answer": answer, "hint": "",
                         "image": "image.png" if has_image else None, "task": "closed choice", "grade": "grade5",
                         "subject": "natural science", "topic": "science-and-engineering-practices",
                         "category": "Engineering practices", "skill": "Evaluate tests of engineering-design solutions",
                         "lecture": "", "solution": "", "split": split}  # fmt: skip
        splits[split].append(pid)
        if split != "test":
            continue
        options = "\n".join(f"{'ABCDE'[i]}. {choice}" for i, choice in enumerate(choices))
        marker = "<image>\n" if has_image else ""
        value = f"{marker}Context: a hint.\n{question}\n{options}"
        record = {
            "id": pid,
            **({"image": f"{pid}/image.png"} if has_image else {}),
            "conversations": [{"from": "human", "value": value}, {"from": "gpt", "value": "ABCDE"[answer]}],
        }
        records.append(record)
        prompt = f"{marker}Context: a hint.\n{question}\n{options}\n{LETTER}"
        answers.append(llava_answer(pid, prompt, text, len(answers)))
    (folder / "problems.json").write_text(json.dumps(problems))
    (folder / "pid_splits.json").write_text(json.dumps(splits))
    (folder / "llava_test_CQM-A.json").write_text(json.dumps(records, indent=2))
    return folder / "llava_test_CQM-A.json", folder / "problems.json", write_jsonl(folder / "answers.jsonl", answers)


# --- MMBench dev TSV -------------------------------------------------------------------------------------------------

MMBENCH_COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
                   "l2-category", "comment", "split"]  # fmt: skip


def png_base64(color: str = "red") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def mmbench_row(index: int, options: list[str], answer: str, category: str, hint: str = "") -> dict:
    """A dev TSV row; absent options and hints are empty cells (pandas reads them as NaN)."""
    padded = options + [""] * (4 - len(options))
    return {"index": index, "question": f"Question {index}?", "hint": hint, **dict(zip("ABCD", padded)),
            "answer": answer, "category": category, "image": png_base64(), "source": "MMBench",
            "l2-category": f"{category}_l2", "comment": "", "split": "dev"}  # fmt: skip


def write_tsv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, MMBENCH_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def mmbench_llava_answer(row: dict, text: str, round_id: int, number: int) -> dict:
    """``model_vqa_mmbench``: prompt without the suffix, options rotated ``round_id`` times, their letters too."""
    options = [row[c] for c in "ABCD" if row[c]]
    letters = list("ABCD"[: len(options)])
    options, letters = options[round_id:] + options[:round_id], letters[round_id:] + letters[:round_id]
    question = (f"{row['hint']}\n" if row["hint"] else "") + row["question"]
    prompt = question + "".join(f"\n{letter}. {option}" for letter, option in zip("ABCD", options))
    return llava_answer(row["index"], prompt, text, number, round_id=round_id) | {"options": options,
                                                                                  "option_char": letters}  # fmt: skip


# --- MME release folder ----------------------------------------------------------------------------------------------

# category -> {image file: [(question, truth), (question, truth)]}; artwork keeps images/ and questions_answers_YN/.
MME_RELEASE = {
    "artwork": {"14777.jpg": [("Does this artwork belong to the type of religious? Please answer yes or no.", "Yes"),
                              ("Does this artwork belong to the type of historical? Please answer yes or no.", "No")],
                "24291.jpg": [("Is this artwork titled sorrow?  Please answer yes or no.", "No"),
                              ("Is this artwork titled virgin and child? Please answer yes or no.", "Yes")]},
    "existence": {"000000006040.jpg": [("Is there a train in this image? Please answer yes or no.", "Yes"),
                                       ("Is there a bed in this image? Please answer yes or no.", "No")]},
    "code_reasoning": {"0020.png": [("Is a python code shown in the picture? Please answer yes or no.", "Yes"),
                                    ("Is a c++ code shown in the picture? Please answer yes or no.", "No")]},
}  # fmt: skip


def write_mme_release(folder: Path) -> Path:
    root = folder / "MME_Benchmark_release_version"
    for category, images in MME_RELEASE.items():
        nested = category == "artwork"
        image_dir = root / category / ("images" if nested else "")
        qa_dir = root / category / ("questions_answers_YN" if nested else "")
        image_dir.mkdir(parents=True, exist_ok=True)
        qa_dir.mkdir(parents=True, exist_ok=True)
        for name, lines in images.items():
            Image.new("RGB", (8, 8), "blue").save(image_dir / name)
            (qa_dir / f"{Path(name).stem}.txt").write_text("\n".join(f"{q}\t{a}" for q, a in lines) + "\n")
    return root
