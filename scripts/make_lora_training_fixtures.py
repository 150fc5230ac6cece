#!/usr/bin/env python3
"""Makes the LoRA training fixtures under Tests/Fixtures/lora_train/: a PEFT adapter on a parity
fixture's checkpoint, the cross-entropy PEFT computes on the checkpoint's prompt (next-token
targets, mean over positions, as transformers' `labels=` gives it), and PyTorch's gradients of
that loss with respect to every lora_A and lora_B (the oracle for MoEKit's LoRA backward).

  llama/      r 4, alpha 8 on every attention and MLP projection of Tests/Fixtures/llama
  qwen2_moe/  rsLoRA r 4, alpha 8, with alpha_pattern (o_proj 2) on attention, the shared
              expert, its sigmoid gate and the LM head of Tests/Fixtures/qwen2_moe
  qwen3_moe/  r 3, alpha 6 on q_proj and v_proj and, through PEFT's `target_parameters`, on
              transformers 5's stacked `mlp.experts.gate_up_proj` and `mlp.experts.down_proj`
              (one A per expert shared by its gate and up rows) of Tests/Fixtures/qwen3_moe

A and B are random (init_lora_weights=False) from a fixed seed, so every gradient is non-zero.
Each folder holds the PEFT adapter (adapter_config.json, adapter_model.safetensors),
gradients.safetensors (same tensor names) and reference.json (prompt, loss). Needs torch,
transformers, peft and safetensors from PyPI.

    python3 scripts/make_lora_training_fixtures.py
"""
import json
import os
import shutil

import peft
import torch
import transformers
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

ROOT = os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures")
OUT = os.path.join(ROOT, "lora_train")


def make(name, seed, config):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(os.path.join(ROOT, name), dtype=torch.float32)
    prompt = json.load(open(os.path.join(ROOT, name, "reference.json")))["prompt"]
    model = get_peft_model(model, config)
    model.train()  # dropout is 0: train mode changes nothing but PEFT's bookkeeping
    ids = torch.tensor([prompt])
    loss = model(ids, labels=ids).loss
    loss.backward()
    path = os.path.join(OUT, name)
    shutil.rmtree(path, ignore_errors=True)
    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    os.makedirs(path)
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.move(os.path.join(tmp, f), os.path.join(path, f))
    shutil.rmtree(tmp, ignore_errors=True)
    config_path = os.path.join(path, "adapter_config.json")
    saved = json.load(open(config_path))  # the base as the repository names it, not this machine's path
    saved["base_model_name_or_path"] = "Tests/Fixtures/" + name
    json.dump(saved, open(config_path, "w"), indent=2, sort_keys=True)
    grads = {}
    for n, p in model.named_parameters():
        if p.grad is not None:  # base_model.model.<module>.lora_A.default.weight -> PEFT's saved name
            grads[n.replace(".default.", ".")] = p.grad.detach().contiguous()
    save_file(grads, os.path.join(path, "gradients.safetensors"), metadata={"format": "pt"})
    json.dump({"base": name, "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
               "prompt": prompt, "loss": round(float(loss), 7)}, open(os.path.join(path, "reference.json"), "w"))


make("llama", 3, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, lora_dropout=0.0,
                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
make("qwen2_moe", 4, LoraConfig(r=4, lora_alpha=8, use_rslora=True, init_lora_weights=False, lora_dropout=0.0,
                                alpha_pattern={"o_proj": 2},
                                target_modules=r".*(self_attn\.(q|k|v|o)_proj|shared_expert\.(gate|up|down)_proj|shared_expert_gate|lm_head)"))
make("qwen3_moe", 5, LoraConfig(r=3, lora_alpha=6, init_lora_weights=False, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                                target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]))
print("wrote", OUT)
