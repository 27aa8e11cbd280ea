"""MME from the official release folder (``docs/evaluation.md``): LLaVA's questions, the conversion LLaVA's
``convert_answer_to_mme.py`` does, and the scores of MME's ``eval_tool/calculation.py``.

The release folder ``MME_Benchmark_release_version`` has one folder per category; each image has a ``.txt`` of two
``question<TAB>Yes|No`` lines. LLaVA asks each question without " Please answer yes or no." and with the short-answer
suffix; the conversion puts the phrase back to find the ground truth. A category scores accuracy + accuracy+ (both
questions of an image right), ×100; perception sums 10 categories, cognition 4.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

from .questions import SHORT_ANSWER, Question, image_loader, llava_question_file
from .records import Answer, finish, match_answers

MME_SUFFIX = re.compile(r"\s*Please answer yes or no\.\s*$")
YES_NO = "Please answer yes or no."
MME_PERCEPTION = ["existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
                  "artwork", "OCR"]  # fmt: skip
MME_COGNITION = ["commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning"]


def mme_questions(path, image_folder=None) -> list[Question]:
    """MME: LLaVA's ``llava_mme.jsonl``, or the official ``MME_Benchmark_release_version`` folder itself.

    From the folder, each ``<category>/[questions_answers_YN/]<name>.txt`` line ``question\\tanswer`` becomes
    LLaVA's question: id and image ``<category>/[images/]<name>.<ext>``, text the question without " Please answer
    yes or no." plus the short-answer suffix (what ``convert_answer_to_mme.py`` undoes).
    """
    root = Path(path)
    if not root.is_dir():
        return llava_question_file(path, image_folder)
    questions = []
    for category, qa_dir, image_dir in mme_folders(root):
        images = {p.stem: p for p in image_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")}
        for text_file in sorted(qa_dir.glob("*.txt")):
            if text_file.stem not in images:
                raise ValueError(f"{text_file}: no image {text_file.stem}.* in {image_dir}")
            image_id = images[text_file.stem].relative_to(root).as_posix()
            for number, line in enumerate(text_file.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    question = MME_SUFFIX.sub("", mme_line(line, f"{text_file}:{number}")[0])
                    questions.append(Question(image_id, f"{question}\n{SHORT_ANSWER}",
                                              image_loader(root, image_id), {"category": category}))  # fmt: skip
    return questions


def mme_folders(root: Path) -> list[tuple[str, Path, Path]]:
    """``(category, questions folder, images folder)``: five categories keep ``images/`` and
    ``questions_answers_YN/`` apart, the others hold both in one folder (as ``convert_answer_to_mme.get_gt``)."""
    folders = []
    for category_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if (category_dir / "images").is_dir():
            folders.append((category_dir.name, category_dir / "questions_answers_YN", category_dir / "images"))
        else:
            folders.append((category_dir.name, category_dir, category_dir))
    if not folders:
        raise ValueError(f"{root}: no category folders (expected MME_Benchmark_release_version)")
    return folders


def mme_line(line: str, where: str) -> tuple[str, str]:
    parts = line.strip().split("\t")
    if len(parts) != 2:
        raise ValueError(f"{where}: expected 'question<TAB>answer', got {line[:80]!r}")
    return parts[0], parts[1]


def mme_truth(root: str | Path) -> dict[tuple[str, str, str], str]:
    """``(category, "<name>.txt", question) -> "Yes"|"No"``, as ``convert_answer_to_mme.get_gt``."""
    truth = {}
    for category, qa_dir, _ in mme_folders(Path(root)):
        for text_file in sorted(qa_dir.glob("*.txt")):
            for number, line in enumerate(text_file.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    question, answer = mme_line(line, f"{text_file}:{number}")
                    truth[(category, text_file.name, question)] = answer
    return truth


def mme_key(record: dict, truth: dict) -> tuple[str, str, str]:
    """An answer's ground-truth key, as ``convert_answer_to_mme.py``: category and file from the question id,
    the question from the prompt without the suffix and with " Please answer yes or no." (one space, else two)."""
    question_id = str(record["question_id"])
    category, file = question_id.split("/")[0], question_id.split("/")[-1].split(".")[0] + ".txt"
    prompt = record["prompt"].replace(SHORT_ANSWER, "").strip()
    if YES_NO not in prompt:
        prompt = f"{prompt} {YES_NO}"
        if (category, file, prompt) not in truth:
            prompt = prompt.replace(f" {YES_NO}", f"  {YES_NO}")
    return category, file, prompt


def mme_answer(text: str) -> str:
    """``calculation.parse_pred_ans`` on the lower-cased answer: yes/no, else "yes" or "no" within the first four
    characters, else "other" (never right)."""
    text = text.lower()
    if text in ("yes", "no"):
        return text
    return "yes" if "yes" in text[:4] else "no" if "no" in text[:4] else "other"


def score_mme(answers: list[Answer], annotations, questions=None, allow_partial: bool = False) -> dict:
    """Annotations: the ``MME_Benchmark_release_version`` folder. Per category accuracy and accuracy+ ×100."""
    if annotations is None or not Path(annotations).is_dir():
        raise ValueError(f"MME needs --annotations MME_Benchmark_release_version (a folder), got {annotations!r}")
    truth = mme_truth(annotations)
    kept, coverage = match_answers(answers, lambda record: mme_key(record, truth), Counter(truth.keys()))
    per_image = defaultdict(list)
    for (category, file, question), group in kept.items():
        right = mme_answer(group[0].text) == truth[(category, file, question)].lower()
        per_image[(category, file)].append(right)
    categories = defaultdict(lambda: [0, 0, 0, 0])  # right, questions, images all right, images
    for (category, _), rights in per_image.items():
        counts = categories[category]
        counts[0] += sum(rights)
        counts[1] += len(rights)
        counts[2] += all(rights)
        counts[3] += 1
    scores = {c: 100 * (r / q + a / i) for c, (r, q, a, i) in categories.items()}
    result = {"perception": sum(scores.get(c, 0.0) for c in MME_PERCEPTION),
              "cognition": sum(scores.get(c, 0.0) for c in MME_COGNITION), "categories": scores}  # fmt: skip
    return finish(result, coverage, allow_partial)


def write_mme_results(answers: list[Answer], annotations, output: str | Path) -> Path:
    """``<output>/<category>.txt`` with ``file<TAB>question<TAB>truth<TAB>answer`` lines for MME's
    ``eval_tool/calculation.py --results_dir <output>`` (``convert_answer_to_mme.py``). Lines follow the release's
    order, so an image's two questions are adjacent as ``calculation.py`` requires."""
    truth = mme_truth(annotations)
    kept, coverage = match_answers(answers, lambda record: mme_key(record, truth), Counter(truth.keys()))
    finish({}, coverage, allow_partial=False)
    lines = defaultdict(list)
    for key, answer in truth.items():
        category, file, question = key
        lines[category].append("\t".join((file, question, answer, kept[key][0].text)))
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    for category, rows in lines.items():
        (output / f"{category}.txt").write_text("".join(row + "\n" for row in rows), encoding="utf-8")
    return output
