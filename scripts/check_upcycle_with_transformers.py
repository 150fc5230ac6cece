#!/usr/bin/env python3
"""Checks `moe upcycle` against transformers: transformers loads the upcycled folder as its MoE
family and, for an upcycle with a zero router (--router-std 0) and no noise, computes the dense
model's logits. Prints the largest difference per pair (exit 1 above 1e-4).

    python3 scripts/check_upcycle_with_transformers.py DENSE_DIR MOE_DIR [DENSE_DIR MOE_DIR ...]

Needs torch and transformers from PyPI.
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM

ids = torch.tensor([[5, 9, 33, 2, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]])
worst = 0.0
for dense, moe in zip(sys.argv[1::2], sys.argv[2::2]):
    a = AutoModelForCausalLM.from_pretrained(dense, dtype=torch.float32).eval()
    b = AutoModelForCausalLM.from_pretrained(moe, dtype=torch.float32).eval()
    with torch.no_grad():
        diff = float((a(ids).logits - b(ids).logits).abs().max())
    worst = max(worst, diff)
    print(json.dumps({"dense": dense, "moe": moe, "class": type(b).__name__, "max_abs_diff": diff}))
sys.exit(0 if worst < 1e-4 else 1)
