"""Load on the OpenAI-compatible API (loopback only): a burst of concurrent streamed requests with an image, decode
throughput of 8 concurrent streams against one stream, and continuous arrivals (Poisson) with time to first token
and per-token latency.

Starts controller + one worker + the API for a tiny random model (or a model dir given with --model-path) as real
processes, once per ``--engine`` (``hf``: transformers ``generate`` with dynamic batching; ``vllm``: vLLM's AsyncLLM,
run from the vLLM venv), unless --api-url points at a running server. Decode tok/s of a run = completion tokens /
(last stream's end - first stream's first token); every decode and arrival stream generates exactly --new-tokens /
32 tokens (``ignore_eos``). The tiny model has 64-wide attention heads (vLLM's CPU attention needs >= 32).

    python benchmarks/serve_load.py [--engine hf vllm] [--requests 64] [--new-tokens 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import random
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
from PIL import Image

MODEL = "tiny"


def image_url(index: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), (37 * index % 256, 120, 200)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


async def one_stream(client: httpx.AsyncClient, model: str, index: int, new_tokens: int, ignore_eos: bool) -> dict:
    """One streamed request, read as raw SSE (a light client: on a 2-core machine the load generator shares the
    CPU with the server, and the ``openai`` client's per-chunk parsing would be measured as server time)."""
    content = [
        {"type": "text", "text": f"Describe picture {index}."},
        {"type": "image_url", "image_url": {"url": image_url(index)}},
    ]
    body = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": new_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": ignore_eos,
    }
    start = time.perf_counter()
    first, tokens = None, 0
    async with client.stream("POST", "/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: ") :])
            if "error" in chunk:
                raise RuntimeError(chunk["error"]["message"])
            if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter()
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return {"start": start, "first": first or time.perf_counter(), "end": time.perf_counter(), "tokens": tokens}


async def burst(client, model: str, requests: int, new_tokens: int) -> tuple[list[dict], list[str]]:
    async def guarded(index):
        try:
            return await one_stream(client, model, index, new_tokens, ignore_eos=False)
        except Exception as error:  # counted as a failure, the burst goes on
            return error

    results = await asyncio.gather(*(guarded(i) for i in range(requests)))
    return [r for r in results if isinstance(r, dict)], [repr(r) for r in results if not isinstance(r, dict)]


async def decode_rate(client, model: str, streams: int, new_tokens: int) -> float:
    runs = await asyncio.gather(*(one_stream(client, model, i, new_tokens, ignore_eos=True) for i in range(streams)))
    assert all(run["tokens"] == new_tokens for run in runs), [run["tokens"] for run in runs]
    return sum(run["tokens"] for run in runs) / (max(r["end"] for r in runs) - min(r["first"] for r in runs))


async def arrivals(client, model: str, requests: int, rate: float, seed: int = 0) -> dict:
    """``requests`` streams started at Poisson times (``rate`` per second); TTFT and per-token latency (s)."""
    rng = random.Random(seed)
    offsets, clock = [], 0.0
    for _ in range(requests):
        clock += rng.expovariate(rate)
        offsets.append(clock)
    begin = time.perf_counter()

    async def delayed(index, offset):
        await asyncio.sleep(max(0.0, begin + offset - time.perf_counter()))
        return await one_stream(client, model, index, 32, ignore_eos=True)

    runs = await asyncio.gather(*(delayed(i, offset) for i, offset in enumerate(offsets)))
    ttft = sorted(run["first"] - run["start"] for run in runs)
    per_token = sorted((run["end"] - run["first"]) / max(1, run["tokens"] - 1) for run in runs)
    return {"ttft": ttft, "per_token": per_token}


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def start_stack(stack: ExitStack, model_path: str, max_batch_size: int, worker_args=()) -> tuple[str, str, str]:
    """Controller + one worker + API as processes, stopped with ``stack``: ``(api_url, model_name, worker_url)``."""
    from piip_llava.serve.launch import api_service, controller_service, free_port, wait_for_model, worker_service

    logs = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    controller_port, worker_port, api_port = free_port(), free_port(), free_port()
    controller = f"http://127.0.0.1:{controller_port}"
    services = [
        controller_service(controller_port, logs),
        worker_service(
            model_path, worker_port, controller, logs, "--max-batch-size", str(max_batch_size), *worker_args
        ),
        api_service(api_port, controller, logs),
    ]
    env = {"VLLM_CPU_KVCACHE_SPACE": "2", **os.environ, "HF_HUB_OFFLINE": "1"}
    for service in services:
        stack.callback(service.stop)
        service.start(env).wait_ready(timeout=300)
    name = Path(model_path).resolve().name
    wait_for_model(controller, name)
    return f"http://127.0.0.1:{api_port}/v1", name, f"http://127.0.0.1:{worker_port}"


async def run(args, api_url: str, model: str) -> dict:
    limits = httpx.Limits(max_connections=args.requests, max_keepalive_connections=args.requests)
    client = httpx.AsyncClient(base_url=api_url, timeout=600, limits=limits)
    await decode_rate(client, model, 2, 8)  # warm-up
    ok, failures = await burst(client, model, args.requests, 32)
    wall = max(r["end"] for r in ok) - min(r["start"] for r in ok) if ok else float("nan")
    latency = sorted(r["end"] - r["start"] for r in ok)
    print(f"\n## burst: {args.requests} concurrent streamed requests with an image (max_tokens 32)\n")
    print(f"- failures: {len(failures)}" + (f" ({failures[:3]})" if failures else ""))
    print(f"- wall {wall:.2f} s; latency p50 {statistics.median(latency):.2f} s, max {latency[-1]:.2f} s")
    print(f"\n## decode throughput, {args.new_tokens} tokens per stream (each repeat: 1 stream, then 8)\n")
    print("| repeat | 1 stream tok/s | 8 streams tok/s (aggregate) | ratio |\n|---|---|---|---|")
    ratios = []
    for repeat in range(args.repeats):
        single = await decode_rate(client, model, 1, args.new_tokens)
        eight = await decode_rate(client, model, 8, args.new_tokens)
        ratios.append(eight / single)
        print(f"| {repeat + 1} | {single:.0f} | {eight:.0f} | {eight / single:.2f}x |")
    print(f"\nmedian ratio 8 streams / 1 stream: {statistics.median(ratios):.2f}x")
    load = await arrivals(client, model, args.arrivals, args.rate)
    print(f"\n## continuous arrivals: {args.arrivals} requests, Poisson {args.rate}/s, 32 tokens each\n")
    print(f"- TTFT p50 {percentile(load['ttft'], 0.5):.3f} s, p99 {percentile(load['ttft'], 0.99):.3f} s")
    print(
        f"- per-token latency p50 {1000 * percentile(load['per_token'], 0.5):.1f} ms, "
        f"p99 {1000 * percentile(load['per_token'], 0.99):.1f} ms"
    )
    await client.aclose()
    return {
        "burst_wall": wall,
        "burst_p50": statistics.median(latency),
        "failures": len(failures),
        "ratio": statistics.median(ratios),
        "ttft_p50": percentile(load["ttft"], 0.5),
        "ttft_p99": percentile(load["ttft"], 0.99),
        "token_p50": percentile(load["per_token"], 0.5),
        "token_p99": percentile(load["per_token"], 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api-url", help="a running server's base URL (.../v1); default: start one per engine")
    parser.add_argument("--model", default=MODEL, help="model name with --api-url")
    parser.add_argument("--model-path", help="model dir to serve (default: a tiny random model)")
    parser.add_argument("--engine", nargs="+", default=["hf"], choices=["hf", "vllm"], help="worker engines to run")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--arrivals", type=int, default=64, help="requests of the continuous-arrival load")
    parser.add_argument("--rate", type=float, default=8.0, help="mean arrivals per second")
    parser.add_argument("--max-batch-size", type=int, default=8, help="hf: rows per generate; vllm: max_num_seqs")
    parser.add_argument("--worker-arg", action="append", default=[], help="extra model_worker flag (repeatable)")
    args = parser.parse_args()
    print(f"# serve load ({platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()})")
    if args.api_url:
        asyncio.run(run(args, args.api_url, args.model))
        return
    summary = {}
    with tempfile.TemporaryDirectory() as folder:
        model_path = args.model_path
        if model_path is None:
            from piip_llava.model.tiny import save_tiny_model

            model_path = str(save_tiny_model(Path(folder) / MODEL, head_dim=64))
        for engine in args.engine:
            print(f"\n# engine: {engine}")
            with ExitStack() as stack:
                worker_args = ["--engine", engine, "--dtype", "float32", *args.worker_arg]
                api_url, model, _ = start_stack(stack, model_path, args.max_batch_size, worker_args)
                summary[engine] = asyncio.run(run(args, api_url, model))
    print("\n# summary\n")
    print("| engine | 8 / 1 stream decode | burst wall s (p50) | TTFT p50 / p99 s | per-token p50 / p99 ms |")
    print("|---|---|---|---|---|")
    for engine, row in summary.items():
        print(
            f"| {engine} | {row['ratio']:.2f}x | {row['burst_wall']:.2f} ({row['burst_p50']:.2f}) | "
            f"{row['ttft_p50']:.3f} / {row['ttft_p99']:.3f} | "
            f"{1000 * row['token_p50']:.1f} / {1000 * row['token_p99']:.1f} |"
        )


if __name__ == "__main__":
    main()
