"""Generation speed of a tiny PIIP-LLaVA on CPU: time to first token and decode throughput, batch 1 and 8.

Time to first token = one ``generate(max_new_tokens=1)`` (image encoding + prefill + one step). Decode tok/s =
(new tokens) / (time of a ``max_new_tokens=N`` run − time to first token), with ``min_new_tokens=N`` so every
sequence generates exactly N tokens. Greedy, KV cache on, left padding for the batch.

    python benchmarks/generate.py [--new-tokens 64] [--repeats 5] [--threads 2] [--tower tiny-clip-2branch]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from PIL import Image

from piip_llava.model.tiny import build_tiny_model

QUESTIONS = ["What color is the circle?", "How many shapes are there?", "Where is the square?", "Describe it."]


def timed(function, repeats: int) -> float:
    function()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tower", default="tiny-clip-2branch")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, processor = build_tiny_model(tower=args.tower)
    print(f"# generation benchmark ({platform.machine()}, {args.threads} threads, torch {torch.__version__})")
    print(f"tiny model: tower {args.tower}, {model.config.image_seq_length} visual tokens, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params\n")  # fmt: skip
    print("| batch | prompt tokens (max) | time to first token | decode tok/s (all sequences) |\n|---|---|---|---|")
    for batch in (1, 8):
        texts = [f"USER: <image>\n{QUESTIONS[i % len(QUESTIONS)]} ASSISTANT:" for i in range(batch)]
        images = [Image.new("RGB", (96, 64), (40 * i % 256, 90, 200)) for i in range(batch)]
        inputs = processor(text=texts, images=images)

        def generate(new_tokens: int, inputs=inputs):
            with torch.inference_mode():
                return model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)

        first = timed(lambda: generate(1), args.repeats)
        full = timed(lambda: generate(args.new_tokens), args.repeats)
        decode_rate = batch * (args.new_tokens - 1) / (full - first)
        print(f"| {batch} | {inputs['input_ids'].shape[1]} | {first * 1e3:.1f} ms | {decode_rate:.0f} |")


if __name__ == "__main__":
    main()
