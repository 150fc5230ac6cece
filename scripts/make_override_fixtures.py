#!/usr/bin/env python3
"""Makes the routing-override oracle: for each committed MoE fixture (Tests/Fixtures/<family>/),
what transformers computes when the checkpoint's `num_experts_per_tok` is changed, written to
reference_k.json beside it: the same 24-token prompt as reference.json, and every position's
logits with top-1 and with top-(k+1) routing.

The weights are the committed ones (loaded with from_pretrained under the changed config), so
re-running needs no other fixture to change. Needs PyTorch and transformers from PyPI.

    python3 scripts/make_override_fixtures.py
"""
import json
import os

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "Tests", "Fixtures")
FAMILIES = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3", "deepseek_v2", "gpt_oss", "glm4_moe"]


def logits_with_k(folder, prompt, k):
    config = AutoConfig.from_pretrained(folder)
    config.num_experts_per_tok = k
    config._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_pretrained(folder, config=config, torch_dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        return model(torch.tensor([prompt])).logits[0].float()


def main():
    for name in FAMILIES:
        folder = os.path.join(FIXTURES, name)
        with open(os.path.join(folder, "reference.json")) as f:
            prompt = json.load(f)["prompt"]
        k = AutoConfig.from_pretrained(folder).num_experts_per_tok
        settings = []
        for new_k in (1, k + 1):
            logits = logits_with_k(folder, prompt, new_k)
            settings.append({"experts_per_token": new_k,
                             "logits": [[round(float(v), 5) for v in row] for row in logits]})
        out = {"architecture": name, "torch": torch.__version__, "transformers": transformers.__version__,
               "prompt": prompt, "checkpoint_k": k, "settings": settings}
        with open(os.path.join(folder, "reference_k.json"), "w") as f:
            json.dump(out, f, separators=(",", ":"))
        print(name, "k", k, "->", [s["experts_per_token"] for s in settings])


if __name__ == "__main__":
    main()
