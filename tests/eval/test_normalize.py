"""piip_llava/eval/normalize.py: hand-computed cases of the EvalAI rules."""

import pytest

from piip_llava.eval.normalize import normalize_answer, vqa_accuracy


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Yes.", "yes"),  # period stripped, lower-cased
        ("3.5", "3.5"),  # a period before a digit stays
        ("1,000", "1000"),  # comma between digits
        ("10,000 feet!", "10000 feet"),  # commas go first (so the digit-comma rule never fires); "!" -> space
        ("red, white and blue", "red white and blue"),  # commas are deleted before punctuation handling
        ("left-right", "left right"),  # "-" not next to a space: replaced by a space
        ("a - b", "b"),  # "-" next to a space: deleted; article "a" dropped
        ("(the) answer", "answer"),  # brackets to spaces, article dropped
        ("Two", "2"),
        ("none", "0"),  # number words, "none" included
        ("ten dogs", "10 dogs"),
        ("An apple", "apple"),
        ("dont", "don't"),  # contractions restored
        ("Whats up", "what's up"),
        ("Im here", "im here"),  # lower-cased before the map, so "Im" never matches
        ("it's John's", "it 's john 's"),  # "'s" split off
        ("why?", "why"),
        ("a\tb\nc", "b c"),
        ("U.S.", "us"),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_vqa_accuracy_leave_one_out():
    def accuracy(matching):
        return vqa_accuracy("two", ["2"] * matching + ["3"] * (10 - matching))

    assert [round(accuracy(m), 6) for m in range(5)] == [0.0, 0.3, 0.6, 0.9, 1.0]
    assert accuracy(10) == 1.0
    assert vqa_accuracy("The Cat.", ["cat"] * 3 + ["dog"] * 7) == pytest.approx(0.9)  # normalised both sides
    with pytest.raises(ValueError, match="exactly 10"):
        vqa_accuracy("x", ["x"] * 9)
