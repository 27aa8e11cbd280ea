"""How fast the quickstart's random LLM learns the text skills the benchmarks need (docs/quickstart.md).

Trains the demo's tiny Llama alone (no vision) on text-only conversations in the vicuna_v1 template, with loss on the
answers only, as `piip-llava train` does, and prints the teacher-forced accuracy of each answer's first token on held
-out conversations, per skill, every --every steps:

- copy: "What word is written in the image?" with a one-word "Reference OCR token" line (TextVQA's prompt);
- fact: opposites, small sums, "Is X a color?";
- choice: a fact's question with four options, answered by letter (MMBench's prompt);
- stated_choice: the same with the answer written in the prompt ("The answer is X."), so only the letter is to find;
- option: the reverse look-up, the same options and "What is option C?", answered by the option's text;
- repeat: "Repeat the words: w1 ... wn" (4-10 words), answered by the same words (a look-up by position).

    .venv/bin/python benchmarks/llm_skills.py --skills copy,fact,choice --steps 600
    .venv/bin/python benchmarks/llm_skills.py --skills stated_choice --turns 1 --steps 3000 --options 4
    .venv/bin/python benchmarks/llm_skills.py --skills stated_choice --turns 1 --steps 1400 --curriculum 2:400,3:300
"""

import argparse
import collections
import json
import random
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from piip_llava.data.preprocess import tokenize_conversation
from piip_llava.data.scene_sets import mc_prompt, textvqa_prompt
from piip_llava.data.scenes import VOCABULARY, text_only_qa
from piip_llava.demo import DEMO_LLM
from piip_llava.eval.benchmarks import SHORT_ANSWER
from piip_llava.model.tiny import TINY_TEXT_CONFIGS, train_tokenizer


def question(skill: str, rng: random.Random, options: int | list[int]) -> tuple[str, str]:
    if skill == "copy":
        word = rng.choice(VOCABULARY)
        return textvqa_prompt("What word is written in the image?", [word]), word
    if skill == "repeat":
        words = " ".join(
            rng.choice(VOCABULARY + ["red", "blue", "left", "top", "1", "2", "3"]) for _ in range(rng.randint(4, 10))
        )
        return f"Repeat the words: {words}", words
    qa = text_only_qa(rng)
    if skill == "fact":
        return f"{qa.question}\n{SHORT_ANSWER}", qa.answer
    if isinstance(options, list):
        options = rng.choice(options)
    while len(qa.choices) < options:
        qa = text_only_qa(rng)
    choices = rng.sample([c for c in qa.choices if c != qa.answer], options - 1) + [qa.answer]
    rng.shuffle(choices)
    if skill == "option":
        letter = rng.choice("ABCD"[:options])
        listing = "".join(f"\n{key}. {choice}" for key, choice in zip("ABCD", choices))
        return f"{qa.question}{listing}\nWhat is option {letter}?\n{SHORT_ANSWER}", choices["ABCD".index(letter)]
    stated = f"The answer is {qa.answer}.\n" if skill == "stated_choice" else ""
    return stated + mc_prompt(qa.question, choices), "ABCD"[choices.index(qa.answer)]


def batch(tokenizer, rng, skills, turns, options, size):
    samples, kinds = [], []
    for _ in range(size):
        chosen = [rng.choice(skills) for _ in range(rng.randint(max(1, turns // 2), turns))]
        conversation = []
        for skill in chosen:
            prompt, answer = question(skill, rng, options)
            conversation += [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}]
        samples.append(tokenize_conversation(conversation, tokenizer, "vicuna_v1", 1, 0, 2048))
        kinds.append(chosen)
    length = max(len(s.input_ids) for s in samples)
    input_ids = torch.full((size, length), tokenizer.pad_token_id)
    labels = torch.full((size, length), -100)
    for row, sample in enumerate(samples):
        input_ids[row, : len(sample.input_ids)] = sample.input_ids
        labels[row, : len(sample.labels)] = sample.labels
    return input_ids, labels, kinds


def first_answer_tokens(tokenizer, labels_row) -> list[int]:
    """Positions (in the shifted labels) of each answer's first non-space token."""
    targets = (labels_row != -100).nonzero().flatten().tolist()
    starts = [p for p in targets if p - 1 not in targets]
    return [p + 1 if tokenizer.decode([int(labels_row[p])]).strip() == "" else p for p in starts]


@torch.no_grad()
def accuracy(model, tokenizer, held_out) -> dict[str, float]:
    hits = collections.defaultdict(lambda: [0, 0])
    model.eval()
    for input_ids, labels, kinds in held_out:
        predictions = model(input_ids=input_ids).logits[:, :-1].argmax(-1)
        shifted = labels[:, 1:]
        for row, row_kinds in enumerate(kinds):
            for skill, position in zip(row_kinds, first_answer_tokens(tokenizer, shifted[row])):
                hits[skill][0] += int(predictions[row, position] == shifted[row, position])
                hits[skill][1] += 1
    model.train()
    return {skill: round(hit / total, 2) for skill, (hit, total) in sorted(hits.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skills", default="copy,fact,choice")
    parser.add_argument("--turns", type=int, default=6, help="questions per conversation (at most)")
    parser.add_argument(
        "--options",
        default="4",
        help="options per choice question while training: 4, or a mix "
        "such as 2,3,4 (each question draws its count); held-out questions have --eval-options",
    )
    parser.add_argument(
        "--curriculum",
        default="",
        help="stages before --options, as COUNT:STEPS pairs, "
        "e.g. 2:400,3:300 (two options for 400 steps, then three for 300)",
    )
    parser.add_argument(
        "--eval-options",
        type=int,
        choices=[2, 3, 4],
        help="options per held-out choice question (default: the largest of --options)",
    )
    parser.add_argument("--prompt-loss", action="store_true", help="train on every token, not on the answers only")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--llm", default="{}", help="JSON overrides of the demo LLM config")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    tokenizer = train_tokenizer()
    config = {**TINY_TEXT_CONFIGS["llama"], **DEMO_LLM, **json.loads(args.llm)}
    model_type = config.pop("model_type")
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, vocab_size=len(tokenizer), **config))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.0)
    skills, rng = args.skills.split(","), random.Random(args.seed)
    held_out_rng = random.Random(args.seed + 1000)
    options = [int(n) for n in args.options.split(",")]
    if not set(options) <= {2, 3, 4}:
        parser.error("--options takes counts among 2, 3, 4")
    train_options = options if len(options) > 1 else options[0]
    eval_options = args.eval_options or max(options)
    held_out = [batch(tokenizer, held_out_rng, skills, args.turns, eval_options, 32) for _ in range(4)]
    started = time.time()
    print(json.dumps({"step": 0, "accuracy": accuracy(model, tokenizer, held_out)}))
    stages, end = [], 0
    for stage in filter(None, args.curriculum.split(",")):
        count, length = (int(n) for n in stage.split(":"))
        end += length
        stages.append((end, count))
    for step in range(1, args.steps + 1):
        step_options = next((count for last, count in stages if step <= last), train_options)
        input_ids, labels, _ = batch(tokenizer, rng, skills, args.turns, step_options, args.batch_size)
        if args.prompt_loss:  # next-token loss on the whole conversation, as an LLM is pretrained on text
            labels = input_ids.masked_fill(input_ids == tokenizer.pad_token_id, -100)
        loss = model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % args.every == 0:
            record = {"step": step, "loss": round(loss.item(), 3), "seconds": round(time.time() - started),
                      "accuracy": accuracy(model, tokenizer, held_out)}  # fmt: skip
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
