#!/usr/bin/env python3
"""Checks `moe init-random` against transformers: for each family, writes a small random f32
checkpoint with the built `moe`, loads it with transformers, and compares the logits of a
prompt with `moe logits`. Prints one line per family and exits non-zero on any mismatch.

    swift build -c release && python3 scripts/check_random_checkpoints.py [.build/release/moe]
"""
import json
import subprocess
import sys
import tempfile

import torch
from transformers import AutoModelForCausalLM

MOE = sys.argv[1] if len(sys.argv) > 1 else ".build/release/moe"
FAMILIES = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3", "deepseek_v2", "gpt_oss", "glm4_moe",
            "llama", "mistral", "qwen2", "qwen3"]
TOKENS = [5, 77, 300, 12, 9, 256, 41, 8, 199, 3, 64, 128]

worst = 0.0
for arch in FAMILIES:
    out = tempfile.mkdtemp(prefix=f"moekit-rnd-{arch}-")
    subprocess.run([MOE, "init-random", "--arch", arch, "--out", out, "--vocab", "320", "--hidden", "64", "--layers", "3",
                    "--heads", "4", "--kv-heads", "2", "--experts", "8", "--top-k", "2", "--expert-size", "32",
                    "--dense-size", "96", "--shared-size", "48", "--groups", "2", "--topk-group", "1",
                    "--dense-layers", "1", "--kv-lora-rank", "16", "--q-lora-rank", "24", "--nope-dim", "8",
                    "--rope-dim", "8", "--v-dim", "8", "--sliding-window", "6", "--dtype", "f32", "--seed", "3"],
                   check=True, capture_output=True)
    ours = json.loads(subprocess.run([MOE, "logits", "--model", out, "--tokens", ",".join(map(str, TOKENS))],
                                     check=True, capture_output=True).stdout)["logits"]
    model = AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        theirs = model(torch.tensor([TOKENS])).logits[0]
    diff = (torch.tensor(ours) - theirs).abs().max().item()
    worst = max(worst, diff)
    print(f"{arch:12s} max |diff| {diff:.2e}")
print(f"worst {worst:.2e}")
sys.exit(0 if worst < 1e-4 else 1)
