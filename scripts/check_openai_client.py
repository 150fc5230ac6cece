#!/usr/bin/env python3
"""Drives `moe serve` with the official `openai` Python client (PyPI) and checks every answer.

    python3 scripts/check_openai_client.py BASE_URL MODEL_NAME API_KEY

The server must run the embedded default model (no chat template: a chat is its messages'
contents, one per line) with API_KEY. scripts/check-openai-client.sh starts one and runs this.
"""
import sys

import openai
from openai import OpenAI

base, model, key = sys.argv[1], sys.argv[2], sys.argv[3]
client = OpenAI(base_url=base, api_key=key, max_retries=0, timeout=120)
checks = 0


def check(condition, what):
    global checks
    if not condition:
        print(f"FAIL: {what}")
        sys.exit(1)
    checks += 1


# Models.
ids = [m.id for m in client.models.list().data]
check(ids == [model], f"models.list gives {ids}")

# A greedy chat, whole: text, finish reason and usage.
chat = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "add 12 35 ="}],
                                      max_tokens=10, temperature=0)
choice = chat.choices[0]
check(chat.object == "chat.completion" and choice.message.role == "assistant", "chat completion shape")
check(isinstance(choice.message.content, str) and choice.finish_reason in ("stop", "length"), "chat content and finish reason")
check(chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens, "chat usage adds up")

# The same prompt as a completion gives the same greedy text (no template: the same tokens).
completion = client.completions.create(model=model, prompt="add 12 35 =", max_tokens=10, temperature=0)
check(completion.choices[0].text == choice.message.content, "chat and completion agree on a greedy answer")

# Streamed chat with usage: the deltas add up to the whole answer.
stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "add 12 35 ="}],
                                        max_tokens=10, temperature=0, stream=True, stream_options={"include_usage": True})
text, finish, usage = "", None, None
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        text += c.delta.content or ""
        finish = c.finish_reason or finish
check(text == choice.message.content, f"streamed chat {text!r} equals the whole one {choice.message.content!r}")
check(finish == choice.finish_reason and usage is not None and usage.completion_tokens == chat.usage.completion_tokens,
      "streamed finish reason and usage")

# Streamed completion.
pieces = [c.choices[0].text for c in client.completions.create(model=model, prompt="add 12 35 =", max_tokens=10,
                                                                 temperature=0, stream=True) if c.choices]
check("".join(pieces) == completion.choices[0].text, "streamed completion equals the whole one")

# Log-probabilities, both shapes.
lp = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "sort 3 1 2 ="}], max_tokens=4,
                                    temperature=0, logprobs=True, top_logprobs=3)
content = lp.choices[0].logprobs.content
# One entry per token of the answer (a token wholly inside a stop string is not in it).
check(1 <= len(content) <= lp.usage.completion_tokens and all(len(t.top_logprobs) == 3 for t in content), "chat logprobs")
check("".join(t.token for t in content) == lp.choices[0].message.content, "chat logprob tokens spell the answer")
check(all(t.logprob <= 0 and t.top_logprobs[0].logprob >= t.logprob - 1e-6 for t in content), "greedy takes the top token")
clp = client.completions.create(model=model, prompt="sort 3 1 2 =", max_tokens=4, temperature=0, logprobs=2)
check("".join(clp.choices[0].logprobs.tokens) == clp.choices[0].text, "completion logprob tokens spell the text")

# n choices, a seed, a stop sequence.
many = client.completions.create(model=model, prompt="copy a b c =", max_tokens=6, n=3, seed=7, temperature=1)
check(len(many.choices) == 3 and sorted(c.index for c in many.choices) == [0, 1, 2], "n=3 gives three choices")
again = client.completions.create(model=model, prompt="copy a b c =", max_tokens=6, n=3, seed=7, temperature=1)
check([c.text for c in many.choices] == [c.text for c in again.choices], "a seed repeats the samples")
whole = completion.choices[0].text
if len(whole) > 2:
    stop = whole[1]
    cut = client.completions.create(model=model, prompt="add 12 35 =", max_tokens=10, temperature=0, stop=[stop])
    check(cut.choices[0].finish_reason == "stop" and stop not in cut.choices[0].text, "stop sequence")

# The MoE extension, through extra_body.
routed = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "add 1 2 ="}], max_tokens=3,
                                        temperature=0, extra_body={"moe": {"experts_per_token": 1, "return_routing": True}})
routing = routed.choices[0].model_extra.get("moe_routing")
check(routing and all(len(e) == 1 for token in routing for e in token.values()), "moe.experts_per_token=1 routes one expert")

# Errors arrive as the client's typed exceptions.
try:
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    check(False, "an unknown model is refused")
except openai.BadRequestError as e:
    check(e.status_code == 400 and e.body.get("param") == "model", "unknown model: 400 naming 'model'")
try:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], temperature=5)
    check(False, "temperature 5 is refused")
except openai.BadRequestError as e:
    check(e.body.get("param") == "temperature", "temperature out of range: 400 naming it")
try:
    OpenAI(base_url=base, api_key="wrong", max_retries=0).models.list()
    check(False, "a wrong key is refused")
except openai.AuthenticationError as e:
    check(e.status_code == 401, "wrong key: 401")

print(f"openai {openai.__version__}: {checks} checks passed")
