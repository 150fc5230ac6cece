#!/usr/bin/env python3
"""Checks that transformers loads a checkpoint `moe prune` wrote, and computes what MoEKit does:
prunes Tests/Fixtures/mixtral of experts 2 and 5 with `moe prune` (a profile that ranks them
last), loads the result with transformers, and compares its logits with reference_pruned.json
(transformers on the original with those experts deleted by hand).

    python3 scripts/check_pruned.py [MOE_BINARY]
"""
import json, os, subprocess, sys, tempfile
import torch
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "Tests", "Fixtures", "mixtral")
moe = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", ".build", "release", "moe")
ref = json.load(open(os.path.join(FIX, "reference_pruned.json")))
with tempfile.TemporaryDirectory() as tmp:
    shares = [0.01 if e in ref["skipped"] else 0.16 for e in range(8)]
    profile = os.path.join(tmp, "profile.json")
    json.dump({"tokens": 100, "load": {str(l): shares for l in range(3)}}, open(profile, "w"))
    out = os.path.join(tmp, "pruned")
    subprocess.run([moe, "prune", "--model", FIX, "--profile", profile, "--keep", "6", "--out", out], check=True, stdout=subprocess.DEVNULL)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([ref["prompt"]])).logits[0]
    diff = (logits - torch.tensor(ref["logits"])).abs().max().item()
    print(f"transformers loads the pruned checkpoint ({model.config.num_local_experts} experts); max |logit diff| {diff:.2e}")
    sys.exit(0 if diff < 1e-4 else 1)
