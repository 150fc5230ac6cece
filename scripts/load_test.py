#!/usr/bin/env python3
"""Load test of `moe serve` with the official openai client: CLIENTS concurrent streaming
clients send REQUESTS greedy chat requests in all. Every answer must equal the same prompt's
answer from a single request alone; no request may fail; the server's resident memory after
warm-up (the first 10% of requests) must stay flat to the end.

    python3 scripts/load_test.py BASE_URL MODEL SERVER_PID [CLIENTS] [REQUESTS]

Prints one JSON line: requests, errors, mismatches, seconds, tokens per second, and resident
memory (MiB) after warm-up, at its highest after warm-up, and at the end.
"""
import asyncio
import json
import sys
import time

from openai import AsyncOpenAI, OpenAI

base, model, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
clients = int(sys.argv[4]) if len(sys.argv) > 4 else 64
total = int(sys.argv[5]) if len(sys.argv) > 5 else 1000
prompts = ["add 12 35 =", "reverse abcdef =", "sort 5 3 9 1 =", "copy hello world =", "add 7 8 =", "max 3 9 2 =",
           "count a b c =", "add 100 1 =", "sort 9 8 7 6 5 =", "copy x y z ="]


def rss_mib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def request(prompt):
    return dict(model=model, messages=[{"role": "user", "content": prompt}], max_tokens=16, temperature=0)


sync = OpenAI(base_url=base, api_key="none", max_retries=0, timeout=300)
expected = {p: sync.chat.completions.create(**request(p)).choices[0].message.content for p in prompts}


async def main():
    client = AsyncOpenAI(base_url=base, api_key="none", max_retries=0, timeout=600)
    queue = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(prompts[i % len(prompts)])
    stats = {"done": 0, "errors": 0, "mismatches": 0, "tokens": 0, "warm_rss": None, "peak_rss": 0.0}
    warm_after = max(1, total // 10)

    async def worker():
        while not queue.empty():
            prompt = queue.get_nowait()
            try:
                stream = await client.chat.completions.create(**request(prompt), stream=True,
                                                              stream_options={"include_usage": True})
                text = ""
                async for chunk in stream:
                    if chunk.usage is not None:
                        stats["tokens"] += chunk.usage.completion_tokens
                    for c in chunk.choices:
                        text += c.delta.content or ""
                if text != expected[prompt]:
                    stats["mismatches"] += 1
            except Exception as e:  # counted, and the first few shown
                stats["errors"] += 1
                if stats["errors"] <= 3:
                    print("error:", repr(e), file=sys.stderr)
            stats["done"] += 1
            if stats["done"] == warm_after:
                stats["warm_rss"] = rss_mib()
            elif stats["done"] > warm_after:
                stats["peak_rss"] = max(stats["peak_rss"], rss_mib())

    start = time.time()
    await asyncio.gather(*[worker() for _ in range(clients)])
    seconds = time.time() - start
    print(json.dumps({"clients": clients, "requests": total, "errors": stats["errors"], "mismatches": stats["mismatches"],
                      "seconds": round(seconds, 2), "tokens_per_s": round(stats["tokens"] / seconds, 1),
                      "rss_mib_after_warmup": round(stats["warm_rss"] or 0, 1), "rss_mib_peak": round(stats["peak_rss"], 1),
                      "rss_mib_end": round(rss_mib(), 1)}))
    return stats["errors"] == 0 and stats["mismatches"] == 0


sys.exit(0 if asyncio.run(main()) else 1)
