"""MMBench: LLaVA's prompt, circular rounds, offline answer extraction and CircularEval (spec §2.3).

A question runs once per option with the option *texts* rotated by one each round while the letters stay
A, B, C… (LLaVA's ``--all-rounds``). It counts as correct only if every round is answered correctly. Answers are
matched to options offline (``can_infer_option`` then ``can_infer_text``, as MMBench's evaluator before its GPT
fallback). An answer that matches nothing is wrong.
"""

from __future__ import annotations

from collections import defaultdict

LETTERS = "ABCDE"
CIRCULAR_STRIDE = 1_000_000  # a shipped circular copy k of question i has index i + k·1,000,000 (MMBench's TSVs)
SUFFIX = "Answer with the option's letter from the given choices directly."


def _present(value) -> bool:
    return value is not None and str(value).strip().lower() not in ("", "nan", "none")


def mmbench_rounds(row: dict, all_rounds: bool) -> list[tuple[str, list[str]]]:
    """``(question text with options, option texts)`` per round."""
    options = []
    for letter in LETTERS:
        if not _present(row.get(letter)):
            break
        options.append(str(row[letter]))
    question = row["question"]
    if _present(row.get("hint")):
        question = f"{row['hint']}\n{question}"
    rounds = []
    for shift in range(len(options) if all_rounds else 1):
        rotated = options[shift:] + options[:shift]
        text = question + "".join(f"\n{letter}. {option}" for letter, option in zip(LETTERS, rotated))
        rounds.append((text, rotated))
    return rounds


def mmbench_prompt(text: str) -> str:
    return f"{text}\n{SUFFIX}"


def can_infer_option(answer: str, letters: str) -> str | None:
    """A single option letter standing alone in the answer (punctuation around it ignored)."""
    cleaned = answer
    for char in ".()[],:;!*#{}":
        cleaned = cleaned.replace(char, " ")
    tokens = cleaned.split()
    found = [letter for letter in letters if letter in tokens]
    if len(found) != 1:
        return None
    if found[0] == "A" and len(tokens) > 3:  # "A" in a sentence is the article, not an option
        return None
    return found[0]


def can_infer_text(answer: str, options: list[str], letters: str) -> str | None:
    """The letter of the only option whose text appears in the answer (case-insensitive)."""
    hits = [letter for letter, option in zip(letters, options) if option.lower() in answer.lower()]
    return hits[0] if len(hits) == 1 else None


def extract_choice(answer: str, options: list[str]) -> str | None:
    letters = LETTERS[: len(options)]
    return can_infer_option(answer, letters) or can_infer_text(answer, options, letters)


def circular_eval(records: list[dict]) -> dict:
    """Records carry ``text`` and ``metadata`` (``index, round_id, options, answer, category, l2_category``).
    A question's rounds are its local rotations and its shipped copies (same ``index`` mod 1,000,000)."""
    rounds = defaultdict(list)
    for record in records:
        rounds[int(record["metadata"]["index"]) % CIRCULAR_STRIDE].append(record)
    per_category, per_l2, results = defaultdict(list), defaultdict(list), []
    for group in rounds.values():
        correct = True
        for record in group:
            meta = record["metadata"]
            options, shift = meta["options"], meta["round_id"]
            original = LETTERS.index(meta["answer"])
            expected = LETTERS[(original - shift) % len(options)]
            correct &= extract_choice(record["text"], options) == expected
        results.append(correct)
        per_category[group[0]["metadata"].get("category")].append(correct)
        per_l2[group[0]["metadata"].get("l2_category")].append(correct)

    def percent(values):
        return 100.0 * sum(values) / max(len(values), 1)

    return {
        "accuracy": percent(results),
        "questions": len(results),
        "categories": {str(k): percent(v) for k, v in per_category.items()},
        "l2_categories": {str(k): percent(v) for k, v in per_l2.items()},
    }
