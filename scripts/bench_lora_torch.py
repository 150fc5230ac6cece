#!/usr/bin/env python3
"""The PEFT twin of `moe train` with a `lora` section, for speed: the same checkpoint (the config's
`from`), the same LoRA rank, alpha, dropout and target modules, batch, sequence length, AdamW on
the adapters only, clipping and thread count, in PyTorch eager mode.

    python3 scripts/bench_lora_torch.py scripts/train-bench/lora-olmoe256-attn.json

Compare with `moe train --config <same file> --quiet` (scripts/bench-lora.sh runs both, in
rounds). Prints one JSON object: `tokens_per_s` leaves out 3 warm-up steps, like moe train's
`tokens_per_s_after_warmup`; `tokens_per_s_with_warmup` counts them, like its `tokens_per_s`.
Random tokens stand in for the corpus: the speed of a step does not depend on the text. The
model runs as transformers loads it by default (attention `sdpa`, experts `grouped_mm`).
"""
import json
import sys

import peft
import torch
import transformers
from peft import LoraConfig, get_peft_model

from bench_train_torch import timed  # the same warm-up and timing as the full-training twin


def main():
    cfg = json.load(open(sys.argv[1]))
    lora = cfg["lora"]
    threads = cfg.get("threads", 2)
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.get("seed", 1))
    model = transformers.AutoModelForCausalLM.from_pretrained(cfg["from"], dtype=torch.float32)
    targets = lora.get("target_modules", ["q_proj", "k_proj", "v_proj", "o_proj"])
    model = get_peft_model(model, LoraConfig(r=lora.get("rank", 8), lora_alpha=lora.get("alpha", 16),
                                             lora_dropout=lora.get("dropout", 0.0), target_modules=targets,
                                             use_rslora=lora.get("use_rslora", False)))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.1))
    batch, seq, steps = cfg["batch"], cfg["seq_len"], cfg["steps"]
    vocab = model.config.vocab_size

    def step():
        opt.zero_grad(set_to_none=True)
        ids = torch.randint(0, vocab, (batch, seq))
        model(input_ids=ids, labels=ids).loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, cfg.get("clip", 1.0))
        opt.step()

    elapsed, with_warmup = timed(step, steps)
    print(json.dumps({"config": sys.argv[1], "torch": torch.__version__, "transformers": transformers.__version__,
                      "peft": peft.__version__, "threads": threads, "steps": steps,
                      "trainable_parameters": sum(p.numel() for p in trainable),
                      "attention": model.config._attn_implementation,
                      "experts_implementation": getattr(model.config, "_experts_implementation", None),
                      "tokens_per_s": batch * seq * steps / elapsed,
                      "tokens_per_s_with_warmup": batch * seq * (steps + 3) / with_warmup}))


if __name__ == "__main__":
    main()
