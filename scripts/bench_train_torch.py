#!/usr/bin/env python3
"""The PyTorch twin of `moe train` for speed: the same model (transformers' Mixtral layout, which
is what `moe train` writes), the same shape, batch, optimiser and thread count, in eager mode.

    python3 scripts/bench_train_torch.py scripts/train-bench/default.json
    python3 scripts/bench_train_torch.py scripts/train-bench/olmoe256.json

Compare with `moe train --config <same file> --quiet`. A config with `data_parallel` runs here
as one batch: the shards are MoEKit's way of running that same step. Prints one JSON object:
shape, threads and training tokens per second (forward, backward, clipping and AdamW): `tokens_per_s` leaves
out 3 warm-up steps, like moe train's `tokens_per_s_after_warmup`; `tokens_per_s_with_warmup`
counts them, like moe train's `tokens_per_s`. Random byte tokens stand in for the corpus: the
speed of a step does not depend on the text.

The experts run as transformers' default picks (printed as `experts_implementation`): in
transformers 5.23 that is `grouped_mm`, one grouped product per projection. On this machine it
is the fastest of the three that run on a CPU: at the OLMoE shape 2.4-2.7K tokens/s, against 0.87K for
`eager` (a loop over experts) and 0.04K for `batched_mm`.
"""
import json
import sys
import time

import torch
import transformers

VOCAB = 259  # MoEKit's byte tokenizer: 256 bytes plus BOS, EOS and PAD


def timed(step, steps):
    """Runs 3 warm-up steps, then `steps` timed ones; returns the seconds of the timed steps and of all."""
    first = time.perf_counter()
    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    end = time.perf_counter()
    return end - start, end - first


def main():
    cfg = json.load(open(sys.argv[1]))
    m, r = cfg["model"], cfg["router"]
    threads = cfg.get("threads", 2)
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.get("seed", 1))
    config = transformers.MixtralConfig(
        vocab_size=VOCAB, hidden_size=m["hidden_size"], num_hidden_layers=m["layers"],
        num_attention_heads=m["heads"], num_key_value_heads=m["kv_heads"], intermediate_size=m["expert_size"],
        num_local_experts=m["experts"], num_experts_per_tok=r["k"], rms_norm_eps=1e-6,
        router_aux_loss_coef=cfg.get("load_balance", 0.01), output_router_logits=cfg.get("load_balance", 0.01) > 0,
        tie_word_embeddings=False, max_position_embeddings=max(2048, cfg["seq_len"]))
    config._attn_implementation = "eager"
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.1))
    batch, seq = cfg["batch"], cfg["seq_len"]
    steps = cfg["steps"]
    accum = cfg.get("grad_accum", 1)  # as moe train: batch / accum sequences per micro-batch

    def step():
        opt.zero_grad(set_to_none=True)
        for _ in range(accum):
            ids = torch.randint(0, VOCAB, (batch // accum, seq))
            out = model(input_ids=ids, labels=ids)
            (out.loss / accum).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.get("clip", 1.0))
        opt.step()

    elapsed, with_warmup = timed(step, steps)
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"config": sys.argv[1], "torch": torch.__version__, "transformers": transformers.__version__,
                      "threads": threads, "grad_accum": accum, "parameters": params, "steps": steps,
                      "experts_implementation": getattr(model.config, "_experts_implementation", None),
                      "tokens_per_s": batch * seq * steps / elapsed,
                      "tokens_per_s_with_warmup": batch * seq * (steps + 3) / with_warmup}))


if __name__ == "__main__":
    main()
