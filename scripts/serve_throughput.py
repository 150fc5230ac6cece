#!/usr/bin/env python3
"""Total generated tokens per second of an OpenAI-compatible server under C concurrent streams.

    python3 scripts/serve_throughput.py BASE_URL MODEL CONCURRENCY [REQUESTS_PER_STREAM] [MAX_TOKENS] [PROMPT_WORDS]

Each of CONCURRENCY clients sends REQUESTS_PER_STREAM streamed completions one after another
(a PROMPT_WORDS-word prompt, default 32, its first word unique so no server can reuse a cached
prompt prefix; MAX_TOKENS tokens with ignore_eos, greedy); prints one
JSON line with the total completion tokens over the wall time, the prompt tokens, and the mean
time to first token.
"""
import asyncio
import json
import sys
import time

from openai import AsyncOpenAI

base, model, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
per_stream = int(sys.argv[4]) if len(sys.argv) > 4 else 2
max_tokens = int(sys.argv[5]) if len(sys.argv) > 5 else 64
prompt_words = int(sys.argv[6]) if len(sys.argv) > 6 else 32
words = "the quick brown fox jumps over the lazy dog while seven bright stars watch".split()


async def main():
    client = AsyncOpenAI(base_url=base, api_key="none", max_retries=0, timeout=3600)
    tokens, prompt_tokens, ttfts = 0, 0, []

    async def stream(k):
        nonlocal tokens, prompt_tokens
        for r in range(per_stream):
            # Unique from its first word: no request can reuse another's cached prompt prefix.
            prompt = " ".join([f"{k}-{r}"] + [words[(k + r + i) % len(words)] for i in range(prompt_words - 1)])
            start = time.time()
            first = None
            response = await client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0,
                                                       stream=True, stream_options={"include_usage": True},
                                                       extra_body={"ignore_eos": True})
            async for chunk in response:
                if first is None and chunk.choices and chunk.choices[0].text:
                    first = time.time() - start
                if chunk.usage is not None:
                    tokens += chunk.usage.completion_tokens
                    prompt_tokens += chunk.usage.prompt_tokens
            ttfts.append(first or 0)

    start = time.time()
    await asyncio.gather(*[stream(k) for k in range(concurrency)])
    seconds = time.time() - start
    print(json.dumps({"concurrency": concurrency, "requests": concurrency * per_stream, "completion_tokens": tokens, "prompt_tokens": prompt_tokens,
                      "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
                      "mean_ttft_s": round(sum(ttfts) / len(ttfts), 3)}))


asyncio.run(main())
