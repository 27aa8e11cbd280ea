"""The LLaVA-1.5 benchmarks: question loader, scorer and generation length per name (``docs/evaluation.md``;
LLaVA's ``docs/Evaluation.md`` and ``scripts/v1_5/eval/*.sh``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .mmbench import mmbench_questions, score_mmbench
from .mme import mme_questions, score_mme
from .questions import LETTER_ANSWER, SHORT_ANSWER, Question, llava_question_file, scienceqa_questions
from .records import Answer, read_answers, read_jsonl
from .scorers import score_gqa, score_pope, score_scienceqa, score_seed, score_textvqa, textvqa_question

__all__ = ["BENCHMARKS", "LETTER_ANSWER", "SHORT_ANSWER", "Benchmark", "Question", "get_benchmark",
           "llava_question_file", "read_jsonl", "textvqa_question"]  # fmt: skip


@dataclass(frozen=True)
class Benchmark:
    """``load(question_file, image_folder)`` -> questions; ``scorer(answers, annotations, questions,
    allow_partial)`` -> result with ``answered``/``expected``."""

    load: Callable[..., list[Question]]
    scorer: Callable[..., dict]
    max_new_tokens: int = 128

    def score(self, answers: str | Path | list[Answer], annotations=None, questions=None,
              allow_partial: bool = False) -> dict:  # fmt: skip
        """Score an answers file (or its read :class:`~piip_llava.eval.records.Answer` lines) against the official
        annotations (file or folder); ``questions`` is the question file, which POPE needs. Raises
        :class:`~piip_llava.eval.records.IncompleteAnswers` unless every question is answered or ``allow_partial``."""
        if isinstance(answers, (str, Path)):
            answers = read_answers(answers)
        return self.scorer(answers, annotations, questions, allow_partial)


BENCHMARKS: dict[str, Benchmark] = {
    "textvqa": Benchmark(llava_question_file, score_textvqa),
    "gqa": Benchmark(llava_question_file, score_gqa),
    "pope": Benchmark(llava_question_file, score_pope),
    "mme": Benchmark(mme_questions, score_mme),
    "seed": Benchmark(llava_question_file, score_seed),
    "scienceqa": Benchmark(scienceqa_questions, score_scienceqa),
    "mmbench": Benchmark(mmbench_questions, score_mmbench, max_new_tokens=1024),
}


def get_benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; valid: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]
