"""piip_llava/data/scenes.py and scene_sets.py: determinism, formats the real loaders and scorers read, text sizes."""

import json
import random

import numpy as np
import pytest
from PIL import Image

from piip_llava.data.scene_sets import SceneSetSizes, write_scene_sets
from piip_llava.data.scenes import (
    COLORS,
    POSITIONS,
    SHAPES,
    VOCABULARY,
    Item,
    Scene,
    caption,
    random_scene,
    render_scene,
    shape_questions,
    word_questions,
)
from piip_llava.eval.benchmarks import get_benchmark, read_jsonl

SIZES = SceneSetSizes(warmup=20, pretrain=6, instruct=80, textvqa=5, textvqa_small=4, mmbench=3, pope=6)


@pytest.fixture(scope="module")
def scene_sets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    return folder, write_scene_sets(folder, seed=7, sizes=SIZES)


def file_bytes(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_data(scene_sets, tmp_path):
    folder, _ = scene_sets
    write_scene_sets(tmp_path / "again", seed=7, sizes=SIZES)
    first, again = file_bytes(folder), file_bytes(tmp_path / "again")
    assert len(first) > 50 and first == again
    write_scene_sets(tmp_path / "other", seed=8, sizes=SIZES)
    other = file_bytes(tmp_path / "other")
    assert other["instruct.json"] != first["instruct.json"]


def write_answers(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_textvqa_sets_load_and_score_with_the_real_evaluator(scene_sets, tmp_path):
    _, paths = scene_sets
    benchmark = get_benchmark("textvqa")
    for name, ocr_line in [("textvqa", True), ("textvqa_small", False)]:
        folder = paths[name]
        questions = benchmark.load(folder / "llava_textvqa_val_v051_ocr.jsonl", folder / "train_images")
        annotations = json.loads((folder / "TextVQA_0.5.1_val.json").read_text())["data"]
        assert len(questions) == len(annotations) and all(len(a["answers"]) == 10 for a in annotations)
        assert all(("Reference OCR token: " in q.text) == ocr_line for q in questions)
        assert questions[0].image().size == (128, 128)
        truth = {a["image_id"]: a for a in annotations}
        right = [{"question_id": q.question_id, "prompt": q.text, "text": truth[q.question_id]["answers"][0]}
                 for q in questions]  # fmt: skip
        wrong = [{**r, "text": "nothing"} for r in right]
        annotation_file = folder / "TextVQA_0.5.1_val.json"
        # Annotators' noise never outvotes the truth: the first answer scores at least 0.9 (3 of 10 agree).
        assert benchmark.score(write_answers(tmp_path / "right.jsonl", right), annotation_file)["accuracy"] >= 90
        assert benchmark.score(write_answers(tmp_path / "wrong.jsonl", wrong), annotation_file)["accuracy"] == 0


def test_mmbench_tsv_ships_circular_copies_scored_by_circular_eval(scene_sets, tmp_path):
    _, paths = scene_sets
    benchmark = get_benchmark("mmbench")
    questions = benchmark.load(paths["mmbench"])
    assert len(questions) == 4 * SIZES.mmbench  # every row once: the copies are the circular rounds
    main = [q for q in questions if int(q.metadata["index"]) < 1_000_000]
    assert len(main) == SIZES.mmbench and questions[0].image().size == (128, 128)
    for question in questions:  # each copy rotates the options and moves the answer letter with them
        original = next(m for m in main if int(m.metadata["index"]) == int(question.metadata["index"]) % 1_000_000)
        answer_text = original.fields["options"]["ABCD".index(original.metadata["answer"])]
        assert question.fields["options"]["ABCD".index(question.metadata["answer"])] == answer_text
    right = [{**q.record(), "text": q.metadata["answer"], "metadata": q.metadata} for q in questions]
    assert benchmark.score(write_answers(tmp_path / "right.jsonl", right), paths["mmbench"])["accuracy"] == 100
    # One wrong copy fails its question (CircularEval).
    copy = next(i for i, q in enumerate(questions) if int(q.metadata["index"]) >= 1_000_000)
    right[copy]["text"] = "ABCD"[("ABCD".index(right[copy]["text"]) + 1) % 4]
    result = benchmark.score(write_answers(tmp_path / "one_wrong.jsonl", right), paths["mmbench"])
    assert result["accuracy"] == pytest.approx(100 * (SIZES.mmbench - 1) / SIZES.mmbench)


def test_pope_set_scores_with_the_real_evaluator(scene_sets, tmp_path):
    _, paths = scene_sets
    folder = paths["pope"]
    benchmark = get_benchmark("pope")
    questions = benchmark.load(folder / "llava_pope_test.jsonl", folder / "val2014")
    labels = {str(r["question_id"]): r["label"] for p in (folder / "coco").glob("*.json") for r in read_jsonl(p)}
    assert len(labels) == len(questions) == SIZES.pope
    right = [{**q.record(), "text": labels[str(q.question_id)].capitalize()} for q in questions]
    result = benchmark.score(write_answers(tmp_path / "pope.jsonl", right), folder / "coco",
                             folder / "llava_pope_test.jsonl")  # fmt: skip
    assert result["accuracy"] == 100 and set(result["categories"]) == {"random", "adversarial"}


def test_training_sets_load_through_the_llava_dataset(scene_sets, tiny_llava):
    from piip_llava.data import DataConfig, LlavaDataset

    folder, paths = scene_sets
    _, processor = tiny_llava
    for name, template in [("warmup", "vicuna_v1"), ("pretrain", "plain"), ("instruct", "vicuna_v1")]:
        config = DataConfig(template, processor.image_seq_length, 512, str(folder / "images"))
        dataset = LlavaDataset(paths[name], processor.tokenizer, processor.image_processor, config)
        samples = [dataset[i] for i in range(len(dataset))]
        assert not any(s["skipped"] for s in samples)
        assert all((s["labels"] != -100).sum() >= 2 for s in samples)  # an answer token and its end token
    records = json.loads(paths["instruct"].read_text())
    assert any("image" not in r for r in records)  # text-only conversations
    assert any(len(r["conversations"]) > 2 for r in records)  # multi-turn
    texts = [r["conversations"][0]["value"] for r in records]
    assert any("Reference OCR token: " in t for t in texts) and any("\nA. " in t for t in texts)
    # Several questions about one image in one conversation, as LLaVA-1.5 joins VQA questions.
    assert sum(len(r["conversations"]) for r in records) / len(records) > 4


def fact_answer(question: str) -> str:
    words = question.rstrip("?").split()
    if question.startswith("What is the opposite of"):
        return {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}[words[-1]]
    if question.startswith("How much is"):
        return str(int(words[-3]) + int(words[-1]))
    return "Yes" if words[1] in COLORS else "No"


def test_warmup_questions_are_answered_by_their_own_text(scene_sets):
    """The warm-up is text only, and each answer can be read off its question: the OCR token line holds it, or it
    is a fact (opposites, sums, colours), or the option that holds the fact's answer and its letter."""
    _, paths = scene_sets
    records = json.loads(paths["warmup"].read_text())
    assert len(records) == SIZES.warmup and not any("image" in r for r in records)
    kinds = set()
    for record in records:
        turns = record["conversations"]
        for question, answer in zip(turns[::2], turns[1::2]):
            text, answer = question["value"], answer["value"]
            if "Reference OCR token: " in text:
                kinds.add("ocr")
                assert answer in text.split("Reference OCR token: ")[1].split("\n")[0].split(", ")
            elif "\nA. " in text:
                kinds.add("choice")
                options = dict(line.split(". ", 1) for line in text.split("\n")[1:-1])
                named, letter = answer.rsplit(" ", 1)  # the option's text, then its letter
                assert options[letter] == named == fact_answer(text.split("\n")[0])
            else:
                kinds.add("fact")
                assert answer == fact_answer(text.split("\n")[0])
    assert kinds == {"ocr", "choice", "fact"}


def test_one_lettered_asks_at_most_one_lettered_question_and_asks_it_first():
    """``one_lettered=True`` (the LLM part's ``--llm-one-lettered``): a warm-up or stage-2 conversation asks at most
    one multiple-choice question, as its first turn, as MMBench asks one per image; most still ask several questions
    and lettered ones stay common (the stage-2 set: ``write_instruct``). The default keeps lettered questions
    anywhere (the warm-up set of ``--from-scratch``)."""
    from piip_llava.data.scene_sets import TRAIN_SCENE, instruct_turns, scene_with_items, warmup_turns

    def positions(one_lettered: bool) -> tuple[list[list[int]], int]:
        rng, found, several = random.Random(0), [], 0
        for index in range(400):
            if index % 2:
                turns = instruct_turns(scene_with_items(rng, TRAIN_SCENE), rng, one_lettered=one_lettered)
            else:
                turns = warmup_turns(rng, one_lettered=one_lettered)
            questions = [turn["value"] for turn in turns[::2]]
            found.append([i for i, question in enumerate(questions) if "\nA. " in question])
            several += len(questions) > 1
        return found, several

    found, several = positions(one_lettered=True)
    assert all(lettered in ([], [0]) for lettered in found)
    assert sum(map(bool, found)) > 0.3 * len(found) and several > 0.5 * len(found)
    found, _ = positions(one_lettered=False)
    assert any(len(lettered) > 1 or lettered[:1] not in ([], [0]) for lettered in found)


def test_stage2_asks_one_lettered_question_first_answered_as_mmbench_reads_it(scene_sets):
    """The stage-2 set's lettered questions: at most one per conversation, first; each answered with the option's
    text, then its letter ("orange C"), which lmms-eval's MMBench evaluator (``MMBench_Evaluator.can_infer``, the
    matching before its GPT step) and ours (``extract_choice``) both read as that letter."""
    from lmms_eval.tasks.mmbench.mmbench_evals import MMBench_Evaluator

    from piip_llava.eval.mmbench import extract_choice

    _, paths = scene_sets
    official, lettered = MMBench_Evaluator(sys_prompt="There are several options:"), 0
    for record in json.loads(paths["instruct"].read_text()):
        turns = record["conversations"]
        places = [i for i, turn in enumerate(turns[::2]) if "\nA. " in turn["value"]]
        assert places in ([], [0])
        if places:
            lettered += 1
            lines = turns[0]["value"].split("\n")
            options = dict(line.split(". ", 1) for line in lines if line[:3] in ("A. ", "B. ", "C. ", "D. "))
            named, letter = turns[1]["value"].rsplit(" ", 1)
            assert list(options) == list("ABCD") and options[letter] == named
            assert official.can_infer(turns[1]["value"], options) == letter
            assert extract_choice(turns[1]["value"], list(options.values())) == letter
    assert lettered > 0.2 * SIZES.instruct


def glyph_rows(image, background):
    """Rows of the image that differ from the background colour."""
    different = (np.asarray(image, dtype=int) - np.asarray(background)).__abs__().sum(axis=2) > 60
    rows = np.flatnonzero(different.any(axis=1))
    return rows.max() - rows.min() + 1 if len(rows) else 0


def test_small_text_is_small_and_unreadable_at_the_low_resolution():
    heights = {}
    for size in ("large", "medium", "small"):
        scene = Scene((Item("word", "black", 4, text="lamp", text_size=size),))
        heights[size] = glyph_rows(render_scene(scene), scene.background)
        low = render_scene(scene).resize((64, 64), Image.BILINEAR)
        heights[f"{size}@64"] = glyph_rows(low, scene.background)
    assert heights["large"] >= 12 and heights["medium"] >= 9 and heights["small"] <= 7
    # At the big branch's 64 pixels a small word is a smudge a few pixels tall: no letter shapes left.
    assert heights["small@64"] <= 4 < heights["large@64"]


def test_questions_follow_from_the_scene():
    rng = random.Random(0)
    for _ in range(50):
        scene = random_scene(rng)
        text = caption(scene)
        for item in scene.items:
            assert item.position in text and item.color in text
        for qa in shape_questions(scene, rng) + word_questions(scene, rng):
            assert qa.answer in qa.choices
            if qa.category == "count":
                assert qa.answer == str(len(scene.shapes))
            if qa.category == "ocr":
                assert qa.answer in scene.ocr_tokens()


def test_scene_words_are_in_the_tiny_tokenizer_corpus():
    from piip_llava.model.tiny import WORDS

    scene_words = {w for phrase in [*COLORS, *SHAPES, *POSITIONS, *VOCABULARY] for w in phrase.split()}
    assert scene_words <= set(WORDS)
