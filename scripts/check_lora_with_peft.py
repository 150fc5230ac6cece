#!/usr/bin/env python3
"""Checks an adapter `moe train` saved against PEFT: PEFT loads it onto the base checkpoint and
computes the logits of a token sequence; `moe logits --adapter` computes them too; prints the
largest difference (exit 1 above the tolerance).

    python3 scripts/check_lora_with_peft.py BASE_DIR ADAPTER_DIR [MOE_BINARY]

Needs torch, transformers and peft from PyPI.
"""
import json
import subprocess
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

base, adapter = sys.argv[1], sys.argv[2]
moe = sys.argv[3] if len(sys.argv) > 3 else ".build/release/moe"
tokens = [5, 9, 33, 2, 41, 17, 60, 77, 101, 12, 250, 3]
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter).eval()
with torch.no_grad():
    theirs = model(torch.tensor([tokens])).logits[0]
    with model.disable_adapter():
        untouched = model(torch.tensor([tokens])).logits[0]
out = subprocess.run([moe, "logits", "--model", base, "--adapter", adapter, "--tokens", ",".join(map(str, tokens))],
                     check=True, capture_output=True, text=True).stdout
ours = torch.tensor(json.loads(out)["logits"])
diff = float((ours - theirs).abs().max())
effect = float((theirs - untouched).abs().max())
print(json.dumps({"base": base, "adapter": adapter, "max_abs_diff": diff, "adapter_effect": effect}))
sys.exit(0 if diff < 1e-3 and effect > 10 * diff else 1)
