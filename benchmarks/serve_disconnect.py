"""Clients that leave mid-stream: does the stack free their batch rows at once, so the next clients start at once?

``--clients`` clients, ``--concurrency`` at a time, each asks for a long completion (``ignore_eos``), reads 2 text
chunks and closes the connection. Two paths to the same worker: through the OpenAI API + controller, and straight to
the worker (``/worker_generate_stream``). Reported per path: time to first token of the clients (p50 / p90 / max,
and how many waited over 2 s) and the most rows the worker held (``queue_length``, sampled every 20 ms; with rows
freed at once it stays near ``--concurrency``).

Then head-of-line blocking: a "hi" alone, and a "hi" sent while a 10 MB prompt without spaces is in flight
(through the API; the big one is refused before tokenising, so the "hi" should not wait for it).

    python benchmarks/serve_disconnect.py [--clients 200] [--concurrency 16] [--model-path DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
from serve_load import image_url, start_stack


def _body(model: str, index: int, new_tokens: int, worker: bool) -> dict:
    """The same request (text + a 96x64 PNG) in the worker protocol or OpenAI's."""
    prompt, url = f"Describe picture {index} in detail.", image_url(index)
    if worker:
        content = [{"type": "text", "text": prompt}, {"type": "image", "image": url.split(",", 1)[1]}]
        return {"model": model, "messages": [{"role": "user", "content": content}], "max_new_tokens": new_tokens,
                "ignore_eos": True}  # fmt: skip
    content = [{"type": "text", "text": prompt}, {"type": "image_url", "image_url": {"url": url}}]
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": new_tokens,
            "stream": True, "ignore_eos": True}  # fmt: skip


async def leaving_client(client: httpx.AsyncClient, url: str, body: dict, worker: bool) -> float:
    """Seconds to the first text chunk; the client reads one more chunk and leaves."""
    start, chunks, first = time.perf_counter(), 0, None
    async with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            payload = line if worker else line.removeprefix("data: ")
            if not payload or payload == "[DONE]":
                continue
            event = json.loads(payload)
            has_text = event.get("text") if worker else event["choices"] and event["choices"][0]["delta"].get("content")
            if has_text:
                chunks += 1
                first = first or time.perf_counter()
                if chunks == 2:
                    break  # leaving the ``async with`` closes the connection mid-stream
    return (first or time.perf_counter()) - start


async def run_path(url: str, worker_url: str, model: str, args, worker: bool) -> dict:
    limits = httpx.Limits(max_connections=args.concurrency * 2, max_keepalive_connections=0)
    slots = asyncio.Semaphore(args.concurrency)
    rows: list[int] = []
    done = asyncio.Event()

    async def sample(status_client: httpx.AsyncClient):
        while not done.is_set():
            rows.append((await status_client.post(f"{worker_url}/worker_get_status")).json()["queue_length"])
            await asyncio.sleep(0.02)

    async def one(client, index):
        async with slots:
            return await leaving_client(client, url, _body(model, index, args.new_tokens, worker), worker)

    async with httpx.AsyncClient(timeout=600, limits=limits) as client, httpx.AsyncClient(timeout=10) as status:
        sampler = asyncio.create_task(sample(status))
        started = time.perf_counter()
        ttft = sorted(await asyncio.gather(*(one(client, i) for i in range(args.clients))))
        wall = time.perf_counter() - started
        done.set()
        await sampler
        await asyncio.sleep(1.0)  # then the queue must drain to 0: no abandoned row keeps generating
        left = (await status.post(f"{worker_url}/worker_get_status")).json()["queue_length"]
    return {
        "p50": statistics.median(ttft), "p90": ttft[int(0.9 * (len(ttft) - 1))], "max": ttft[-1],
        "over_2s": sum(t > 2.0 for t in ttft), "max_rows": max(rows), "rows_after": left, "wall": wall,
    }  # fmt: skip


async def head_of_line(api_url: str, model: str) -> dict:
    """A "hi" alone; then "hi"s sent every 0.25 s while a 10 MB prompt is in flight (the slowest of them), and the
    10 MB request's own status and seconds."""
    hi = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    huge = {**hi, "messages": [{"role": "user", "content": "x" * (10 << 20)}]}
    async with httpx.AsyncClient(base_url=api_url, timeout=600) as client:

        async def timed(body):
            start = time.perf_counter()
            response = await client.post("/chat/completions", json=body)
            return time.perf_counter() - start, response.status_code

        alone, _ = await timed(hi)
        big = asyncio.create_task(timed(huge))
        beside = []
        while not big.done():
            beside.append((await timed(hi))[0])
            await asyncio.sleep(0.25)
        big_seconds, status = await big
    return {"alone": alone, "beside": max(beside), "count": len(beside), "big": big_seconds, "status": status}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", help="model dir to serve (default: a tiny random model)")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=512, help="what each client asks for (it reads 2 chunks)")
    parser.add_argument("--max-batch-size", type=int, default=16)
    args = parser.parse_args()
    print(f"# clients leaving after 2 chunks ({platform.machine()}, python {platform.python_version()})\n")
    print(f"{args.clients} clients, {args.concurrency} at a time, max_tokens {args.new_tokens}\n")
    print("| path | TTFT p50 | p90 | max | clients > 2 s | most rows held | rows 1 s after | wall |")
    print("|---|---|---|---|---|---|---|---|")
    with ExitStack() as stack:
        model_path = args.model_path
        if model_path is None:
            from piip_llava.model.tiny import save_tiny_model

            folder = stack.enter_context(tempfile.TemporaryDirectory())
            model_path = str(save_tiny_model(Path(folder) / "tiny-piip-llava"))
        api_url, model, worker_url = start_stack(stack, model_path, args.max_batch_size)
        paths = {"API + controller + worker": (f"{api_url}/chat/completions", False),
                 "straight to the worker": (f"{worker_url}/worker_generate_stream", True)}  # fmt: skip
        for name, (url, worker) in paths.items():
            result = asyncio.run(run_path(url, worker_url, model, args, worker))
            print(
                f"| {name} | {result['p50']:.2f} s | {result['p90']:.2f} s | {result['max']:.2f} s | "
                f"{result['over_2s']} | {result['max_rows']} | {result['rows_after']} | {result['wall']:.1f} s |"
            )
        hol = asyncio.run(head_of_line(api_url, model))
        print(
            f'\n"hi" alone {hol["alone"]:.2f} s; the slowest of {hol["count"]} sent beside a 10 MB prompt '
            f"{hol['beside']:.2f} s; the 10 MB request: HTTP {hol['status']} after {hol['big']:.2f} s"
        )


if __name__ == "__main__":
    main()
