"""A finer probe of small-text reading than greedy accuracy: rank the 24 scene words by the model's likelihood.

Greedy answers on the small-text OCR set collapse to one or two words for every tower of the experiment
(docs/pyramid_vs_single.md), so greedy accuracy only says which constant word each run happened to settle on. This
scores every vocabulary word as the answer (teacher-forced log-probability of the answer tokens and ``</s>``, the
same conversation template and image processing as evaluation) and reports, per run, the share of questions whose
right word is ranked first (24-way accuracy; chance 4.2%) and the mean rank of the right word (chance 12.5).

    python scripts/experiments/rank_small_text.py /tmp/pvs            # every RUNS_DIR/seed*/ARM/stage2
    python scripts/experiments/rank_small_text.py /tmp/pvs --set textvqa   # the check: OCR tokens in the prompt
"""

import argparse
import json
import statistics
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoProcessor

import piip_llava.model  # noqa: F401
from piip_llava.data.scenes import VOCABULARY
from piip_llava.eval.benchmarks import Question, llava_question_file, textvqa_question
from piip_llava.model import PiipLlavaForConditionalGeneration
from piip_llava.model.conversation import IMAGE_TOKEN, get_conversation


def questions(data: Path, eval_set: str = "textvqa_small") -> list[tuple[Question, str]]:
    """Every question of a TextVQA-format set with its right word, joined to the annotations as the TextVQA
    scorer joins them (image id and question)."""
    root = data / "eval" / eval_set
    annotations = json.loads((root / "TextVQA_0.5.1_val.json").read_text())["data"]
    words = {(row["image_id"], row["question"].lower()): row["ocr_tokens"][0] for row in annotations}
    questions = llava_question_file(root / "llava_textvqa_val_v051_ocr.jsonl", root / "train_images")
    return [(question, words[(question.question_id, textvqa_question(question.text))]) for question in questions]


def conversation(question: str, answer: str | None) -> str:
    conv = get_conversation("vicuna_v1")
    conv.append_message(conv.roles[0], f"{IMAGE_TOKEN}\n{question}")
    conv.append_message(conv.roles[1], answer)
    return conv.get_prompt()


@torch.inference_mode()
def answer_log_probs(model, processor, question: str, image: Image.Image, words: list[str]) -> list[float]:
    """Log-probability of each word (its tokens and ``</s>``) as the answer to ``question`` about ``image``; the
    candidates run as one left-padded batch."""
    tokenizer = processor.tokenizer
    texts = [conversation(question, word) for word in words]
    prefix = tokenizer(conversation(question, None))["input_ids"]
    inputs = processor(text=texts, images=[image] * len(texts))
    log_probs = model(**inputs).logits.float().log_softmax(-1)
    scores = []
    for row, text in enumerate(texts):
        ids = tokenizer(text)["input_ids"]
        common = next(i for i, (a, b) in enumerate(zip(ids, prefix + [-1])) if a != b)
        positions = inputs["attention_mask"][row].nonzero().flatten()[common - len(ids) :]  # the answer's tokens
        targets = inputs["input_ids"][row, positions]
        scores.append(log_probs[row, positions - 1].gather(-1, targets[:, None]).sum().item())
    return scores


def rank_words(model_dir: Path, items: list[tuple[Question, str]]) -> dict:
    model = PiipLlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    ranks = []
    for question, right in items:
        scores = answer_log_probs(model, processor, question.text, question.image(), list(VOCABULARY))
        ranks.append(1 + sum(score > scores[VOCABULARY.index(right)] for score in scores))
    return {"top1": 100 * sum(r == 1 for r in ranks) / len(ranks), "mean_rank": statistics.mean(ranks),
            "questions": len(ranks)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, help="RUNS_DIR of scripts/experiments/pyramid_vs_single.sh")
    parser.add_argument("--set", default="textvqa_small", help="eval set folder (textvqa: the sanity check)")
    parser.add_argument("--output", type=Path, help="write the figures as JSON here (default RUNS_DIR/ranks_SET.json)")
    args = parser.parse_args()
    results = {}
    for stage2 in sorted(args.runs.glob("seed*/*/stage2")):
        seed = stage2.parent.parent.name
        data = args.runs / f"data-{seed.removeprefix('seed')}"
        results[f"{seed}/{stage2.parent.name}"] = figures = rank_words(stage2, questions(data, args.set))
        chance = 100 / len(VOCABULARY)
        print(f"{seed}/{stage2.parent.name}: right word ranked first {figures['top1']:.1f}% (chance {chance:.1f}%), "
              f"mean rank {figures['mean_rank']:.2f} of {len(VOCABULARY)}")  # fmt: skip
    (args.output or args.runs / f"ranks_{args.set}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
