"""Question and answer files: reading with ``file:line`` errors, question identity, and matching answers to the
questions a score expects (``docs/evaluation.md``).

An answers file is JSONL, one ``{"question_id", "prompt", "text", ...}`` per line, as LLaVA's ``model_vqa_loader``
writes it (``model_vqa_mmbench`` adds ``round_id``, ``options``, ``option_char``). ``question_id`` alone does not
name a question: LLaVA's TextVQA file uses the TextVQA *image* id, shared by every question of that image, and MME
uses the image path. A question's identity is ``(question_id, prompt, round_id)``, the fields LLaVA's answer files
carry: ``prompt`` is the question text as the question file has it. Identical question lines (same id and text) are
the same question asked twice, so identities are counted as multisets everywhere.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

EXAMPLES = 5  # problems listed in an error message


def numbered_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """``(line number, record)`` per non-empty line; a bad line raises ``ValueError`` naming ``path:line``."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not a JSON line ({error.msg}): {line[:80]!r}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            yield number, record


def read_jsonl(path: str | Path) -> list[dict]:
    return [record for _, record in numbered_jsonl(path)]


def load_json(path: str | Path):
    """A JSON file; a syntax error names ``path:line``."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None


def field_of(record: dict, name: str, where: str):
    if name not in record:
        raise ValueError(f"{where}: missing field {name!r} (fields: {', '.join(record)})")
    return record[name]


def identity(record: dict, where: str = "record") -> tuple:
    """What tells one line of a question file from another, read from a question's or an answer's record."""
    round_id = record.get("round_id")
    return str(field_of(record, "question_id", where)), field_of(record, "prompt", where), round_id


@dataclass(frozen=True)
class Answer:
    """One line of an answers file; ``where`` is ``path:line`` for error messages."""

    record: dict
    where: str

    @property
    def text(self) -> str:
        return field_of(self.record, "text", self.where)


def read_answers(path: str | Path) -> list[Answer]:
    answers = [Answer(record, f"{path}:{number}") for number, record in numbered_jsonl(path)]
    for answer in answers:
        answer.text  # noqa: B018 - every line needs a text; fail here with its line, not deep in a scorer
    return answers


class IncompleteAnswers(ValueError):
    """The answers do not cover the expected questions exactly; ``result`` holds the score of what was there."""

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result


@dataclass
class Coverage:
    """How answers met the expected questions: counts, and a few examples of each problem."""

    expected: int = 0
    answered: int = 0
    missing: list = field(default_factory=list)
    unknown: list = field(default_factory=list)
    conflicting: list = field(default_factory=list)
    duplicates: int = 0

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unknown or self.conflicting)

    def summary(self) -> dict:
        return {"answered": self.answered, "expected": self.expected, "missing": len(self.missing),
                "unknown": len(self.unknown), "conflicting": len(self.conflicting),
                "duplicates": self.duplicates}  # fmt: skip

    def problems(self) -> str:
        parts = []
        for name, items in (("missing", self.missing), ("unknown", self.unknown), ("conflicting", self.conflicting)):
            if items:
                shown = "; ".join(str(item) for item in items[:EXAMPLES])
                parts.append(f"{len(items)} {name} (e.g. {shown})")
        return ", ".join(parts)

    def add(self, other: Coverage) -> None:
        self.expected += other.expected
        self.answered += other.answered
        self.missing += other.missing
        self.unknown += other.unknown
        self.conflicting += other.conflicting
        self.duplicates += other.duplicates


def match_answers(
    answers: Iterable[Answer], key_of: Callable[[dict], Hashable], expected: Counter
) -> tuple[dict[Hashable, list[Answer]], Coverage]:
    """Answers kept per expected key, at most its expected count.

    A key answered more often than expected is kept once per expected question when all its answers agree (a chunk
    merged twice) and is *conflicting* otherwise (the first answers are kept); a key nobody expects is *unknown*; a
    shortfall is *missing*. ``key_of`` may raise ``ValueError``; it is re-raised with the answer's ``path:line``.
    """
    grouped: dict[Hashable, list[Answer]] = defaultdict(list)
    coverage = Coverage(expected=sum(expected.values()))
    for answer in answers:
        try:
            key = key_of(answer.record)
        except KeyError as error:
            raise ValueError(f"{answer.where}: missing field {error}") from None
        except (ValueError, TypeError) as error:
            raise ValueError(f"{answer.where}: {error}") from None
        if key in expected:
            grouped[key].append(answer)
        else:
            coverage.unknown.append(f"{answer.where} question_id {answer.record.get('question_id')!r}")
    kept = {}
    for key, count in expected.items():
        group = grouped.get(key, [])
        if len(group) > count:
            if len({answer.text for answer in group}) > 1:
                coverage.conflicting.append(f"{key} answered differently at {', '.join(a.where for a in group)}")
            else:
                coverage.duplicates += len(group) - count
            group = group[:count]
        coverage.missing += [key] * (count - len(group))
        coverage.answered += len(group)
        if group:
            kept[key] = group
    return kept, coverage


def finish(result: dict, coverage: Coverage, allow_partial: bool) -> dict:
    """Attach the coverage to a score; raise :class:`IncompleteAnswers` unless complete or ``allow_partial``."""
    result = {**result, **coverage.summary()}
    if not coverage.complete and not allow_partial:
        raise IncompleteAnswers(
            f"answers cover {coverage.answered} of {coverage.expected} expected questions: {coverage.problems()}. "
            "Score what is there with --allow-partial.",
            result,
        )
    return result
