#!/usr/bin/env python3
"""Makes the routing-override oracle: for each committed MoE fixture (Tests/Fixtures/<family>/),
what transformers computes when the checkpoint's `num_experts_per_tok` is changed, written to
reference_k.json beside it: the same 24-token prompt as reference.json, and every position's
logits with top-1 and with top-(k+1) routing. For Mixtral also reference_pruned.json: the
logits of the checkpoint with experts 2 and 5 deleted (their weights and router rows; 6 experts
left), which `--skip-experts 2,5` must reproduce; and the same without one expert
of each of DeepSeek-V2's 2 groups (1 and 6).

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
    model = AutoModelForCausalLM.from_pretrained(folder, config=config, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        return model(torch.tensor([prompt])).logits[0].float()


def pruned(name, prompt, drop, count_key):
    folder = os.path.join(FIXTURES, name)
    full = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder)
    experts = getattr(config, count_key)
    keep = [e for e in range(experts) if e not in drop]
    setattr(config, count_key, len(keep))
    config._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = {}
    for name, t in full.state_dict().items():
        if name.endswith("mlp.gate.weight") or name.endswith("mlp.gate.e_score_correction_bias"):
            t = t[keep]
        elif ".mlp.experts." in name and t.dim() >= 1 and t.shape[0] == len(keep) + len(drop):
            t = t[keep]                                   # stacked experts [E, ...]
        state[name] = t
    missing, unexpected = model.load_state_dict(state, strict=True), None
    model.eval()
    with torch.no_grad():
        return model(torch.tensor([prompt])).logits[0].float(), list(drop)


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
        # Mixtral without experts 2 and 5; DeepSeek-V2 (2 groups of 4) without one expert of each
        # group (1 and 6), so the groups stay contiguous and equal. (DeepSeek-V3's group score
        # sums each group's top two, so its fixture's groups of 2 cannot lose one.)
        prunes = {"mixtral": ((2, 5), "num_local_experts"), "deepseek_v2": ((1, 6), "n_routed_experts")}
        if name in prunes:
            logits, drop = pruned(name, prompt, *prunes[name])
            with open(os.path.join(folder, "reference_pruned.json"), "w") as f:
                json.dump({"prompt": prompt, "skipped": drop, "transformers": transformers.__version__,
                           "logits": [[round(float(v), 5) for v in row] for row in logits]}, f, separators=(",", ":"))


if __name__ == "__main__":
    main()
