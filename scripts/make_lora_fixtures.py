#!/usr/bin/env python3
"""Makes the LoRA adapter fixtures under Tests/Fixtures/lora/: PEFT adapters on two of the parity
fixtures' checkpoints, and the logits PEFT computes with them (the oracle for `--adapter`).

  llama/        r 4, alpha 8 on every attention and MLP projection of Tests/Fixtures/llama
  qwen2_moe/    rsLoRA r 6, alpha 12, with PEFT's per-module alpha_pattern (v_proj 3) and
                rank_pattern (o_proj 2), on attention, the shared expert, its gate, the token
                embedding and the LM head of Tests/Fixtures/qwen2_moe
  qwen2_moe_q/  a second adapter (r 2 on q_proj), stacked on the first: both active at once
  mixtral_experts/  r 3, alpha 6 on q_proj and, through PEFT's `target_parameters`, on
                transformers 5's stacked expert tensors `mlp.experts.gate_up_proj` and
                `mlp.experts.down_proj` of Tests/Fixtures/mixtral (stored per expert as w1/w3/w2)
  gpt_oss_experts/  rsLoRA r 2, alpha 8 on GPT-OSS's `mlp.experts.gate_up_proj` alone (stored
                stacked, input-major, gate and up columns interleaved) of Tests/Fixtures/gpt_oss

Adapters are made with init_lora_weights=False (A and B random, so B A is not zero) from a
fixed seed, saved with PEFT's save_pretrained, and each folder's reference.json holds the
prompt of the base fixture and PEFT's logits for every position (both adapters active for the
stacked case). Needs torch, transformers and peft from PyPI.

    python3 scripts/make_lora_fixtures.py
"""
import json
import os
import shutil

import peft
import torch
import transformers
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

ROOT = os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures")
OUT = os.path.join(ROOT, "lora")


def base(name):
    model = AutoModelForCausalLM.from_pretrained(os.path.join(ROOT, name), dtype=torch.float32)
    prompt = json.load(open(os.path.join(ROOT, name, "reference.json")))["prompt"]
    return model.eval(), prompt


def save(model, adapter, folder):
    path = os.path.join(OUT, folder)
    shutil.rmtree(path, ignore_errors=True)
    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, selected_adapters=[adapter])
    src = tmp if adapter == "default" else os.path.join(tmp, adapter)
    shutil.move(src, path)
    shutil.rmtree(tmp, ignore_errors=True)
    config_path = os.path.join(path, "adapter_config.json")
    config = json.load(open(config_path))  # the base as the repository names it, not this machine's path
    config["base_model_name_or_path"] = "Tests/Fixtures/" + os.path.basename(config["base_model_name_or_path"].rstrip("/"))
    json.dump(config, open(config_path, "w"), indent=2, sort_keys=True)
    for extra in os.listdir(path):  # PEFT also writes a README.md model card
        if extra not in ("adapter_config.json", "adapter_model.safetensors"):
            os.remove(os.path.join(path, extra))
    return path


def reference(model, prompt, path, base_name):
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0]
    json.dump({"base": base_name, "torch": torch.__version__, "transformers": transformers.__version__,
               "peft": peft.__version__, "prompt": prompt,
               "logits": [[round(float(v), 6) for v in row] for row in logits]}, open(os.path.join(path, "reference.json"), "w"))


torch.manual_seed(0)
model, prompt = base("llama")
config = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
model = get_peft_model(model, config)
reference(model, prompt, save(model, "default", "llama"), "llama")

torch.manual_seed(1)
model, prompt = base("qwen2_moe")
first = LoraConfig(r=6, lora_alpha=12, use_rslora=True, init_lora_weights=False,
                   alpha_pattern={"v_proj": 3}, rank_pattern={"o_proj": 2},
                   target_modules=r".*(self_attn\.(q|k|v|o)_proj|shared_expert\.(gate|up|down)_proj|shared_expert_gate|embed_tokens|lm_head)")
model = get_peft_model(model, first)
with torch.no_grad():  # PEFT's random embedding init leaves B at zero: make it count
    for name, p in model.named_parameters():
        if "lora_embedding_B" in name:
            p.normal_(0, 0.05)
folder = save(model, "default", "qwen2_moe")
reference(model, prompt, folder, "qwen2_moe")
model.add_adapter("second", LoraConfig(r=2, lora_alpha=4, init_lora_weights=False, target_modules=["q_proj"]))
model.base_model.set_adapter(["default", "second"])
folder = save(model, "second", "qwen2_moe_q")
reference(model, prompt, folder, "qwen2_moe")

torch.manual_seed(2)
model, prompt = base("mixtral")
model = get_peft_model(model, LoraConfig(r=3, lora_alpha=6, init_lora_weights=False, target_modules=["q_proj"],
                                         target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]))
reference(model, prompt, save(model, "default", "mixtral_experts"), "mixtral")

torch.manual_seed(3)
model, prompt = base("gpt_oss")
model = get_peft_model(model, LoraConfig(r=2, lora_alpha=8, use_rslora=True, init_lora_weights=False, target_modules=[],
                                         target_parameters=["mlp.experts.gate_up_proj"]))
reference(model, prompt, save(model, "default", "gpt_oss_experts"), "gpt_oss")
print("wrote", OUT)
