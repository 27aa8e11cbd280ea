"""TextVQA on files shaped like LLaVA's (one image id shared by 3 questions), scored against LLaVA's eval_textvqa."""

import contextlib
import io
import json

import pytest

from piip_llava.eval.benchmarks import get_benchmark
from piip_llava.eval.records import identity, read_answers
from piip_llava.eval.scorers import textvqa_question

from .llava_oracle import llava_eval_module
from .official_files import write_textvqa


@pytest.fixture
def textvqa(tmp_path):
    return write_textvqa(tmp_path)


def llava_textvqa(annotations, answers) -> tuple[int, float, str]:
    """LLaVA's eval_textvqa: (samples, exact accuracy in %, its printed report)."""
    module = llava_eval_module("eval_textvqa")
    truth = {(a["image_id"], a["question"].lower()): a for a in json.loads(annotations.read_text())["data"]}
    results = [json.loads(line) for line in answers.read_text().splitlines()]
    pred_list = [{"pred_answer": r["text"],
                  "gt_answers": truth[(r["question_id"], module.prompt_processor(r["prompt"]))]["answers"]}
                 for r in results]  # fmt: skip
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        module.eval_single(str(annotations), str(answers))
    return len(pred_list), 100 * module.TextVQAAccuracyEvaluator().eval_pred_list(pred_list), printed.getvalue()


def test_shared_image_ids_score_every_question_as_llava(textvqa):
    questions, annotations, answers = textvqa
    samples, accuracy, printed = llava_textvqa(annotations, answers)
    assert samples == 21 and "Samples: 21\n" in printed
    ours = get_benchmark("textvqa").score(read_answers(answers), annotations)
    assert ours["accuracy"] == pytest.approx(accuracy, abs=1e-9) and f"Accuracy: {ours['accuracy']:.2f}%" in printed
    assert (ours["answered"], ours["expected"], ours["samples"]) == (21, 21, 21)
    assert 0 < accuracy < 100  # the cases hit full, partial and zero credit


def test_our_question_records_are_llavas_answer_keys(textvqa):
    """Loading the question file gives each question the (question_id, prompt) LLaVA's answer line carries."""
    questions_file, _, answers = textvqa
    questions = get_benchmark("textvqa").load(questions_file, questions_file.parent)
    llava = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [identity(q.record()) for q in questions] == [identity(record) for record in llava]
    assert len({q.question_id for q in questions}) == 7 and len({identity(q.record()) for q in questions}) == 21


@pytest.mark.parametrize(
    "prompt",
    [
        "What is it?\nReference OCR token: A, B\nAnswer the question using a single word or phrase.",
        "What is it?\nReference OCR token: \nAnswer the question using a single word or phrase.",
        "Reference OCR token: A, B\nWhat Is It?\nAnswer the question using a single word or phrase.",
        "What is it?\nAnswer the question using a single word or phrase.",
        "OCR tokens: A B Question: What is it? Short answer:",
    ],
)
def test_question_from_prompt_as_llava(prompt):
    assert textvqa_question(prompt) == llava_eval_module("eval_textvqa").prompt_processor(prompt)
