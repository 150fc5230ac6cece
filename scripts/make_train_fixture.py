#!/usr/bin/env python3
"""Makes Tests/Fixtures/train_step/: one training step of a tiny Mixtral in PyTorch, for
MoETrain's parity test (same initial weights, same batch: same loss, same gradients).

Writes the checkpoint (config.json, model.safetensors), the batch and loss (reference.json),
and every parameter's gradient under its on-disk name (grads.safetensors; transformers 5 fuses
the experts in memory, so their gradients are split back into w1, w3 and w2). The router
auxiliary loss is off: transformers pools it over all layers, MoEKit computes it per layer.

    python3 scripts/make_train_fixture.py
"""
import json
import os

import torch
import transformers
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "Fixtures", "train_step")
SEED = 4321


def main():
    config = transformers.MixtralConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, intermediate_size=16, num_local_experts=4,
                                        num_experts_per_tok=2, rms_norm_eps=1e-6, rope_theta=10000.0,
                                        router_aux_loss_coef=0.0, tie_word_embeddings=False, max_position_embeddings=64)
    config._attn_implementation = "eager"
    torch.manual_seed(SEED)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("mlp.gate.weight"):
                p.normal_(0.0, 1.0)
            else:
                p.normal_(0.0, 0.1)
    os.makedirs(OUT, exist_ok=True)
    model.save_pretrained(OUT, safe_serialization=True)
    gen = os.path.join(OUT, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)

    g = torch.Generator().manual_seed(SEED + 1)
    ids = torch.randint(0, 64, (2, 12), generator=g)
    targets = torch.cat([ids[:, 1:], torch.full((2, 1), -100)], dim=1)
    model.train()
    logits = model(ids).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 64), targets.reshape(-1), ignore_index=-100)
    loss.backward()

    grads = {}
    for name, p in model.named_parameters():
        grad = p.grad.detach().clone().contiguous()
        if name.endswith("mlp.experts.gate_up_proj"):
            prefix = name.replace("mlp.experts.gate_up_proj", "block_sparse_moe.experts")
            half = grad.shape[1] // 2
            for e in range(grad.shape[0]):
                grads[f"{prefix}.{e}.w1.weight"] = grad[e, :half].contiguous()
                grads[f"{prefix}.{e}.w3.weight"] = grad[e, half:].contiguous()
        elif name.endswith("mlp.experts.down_proj"):
            prefix = name.replace("mlp.experts.down_proj", "block_sparse_moe.experts")
            for e in range(grad.shape[0]):
                grads[f"{prefix}.{e}.w2.weight"] = grad[e].contiguous()
        else:
            grads[name.replace("mlp.gate.weight", "block_sparse_moe.gate.weight")] = grad
    save_file(grads, os.path.join(OUT, "grads.safetensors"))
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump({"torch": torch.__version__, "transformers": transformers.__version__,
                   "input_ids": ids.tolist(), "targets": [[t if t >= 0 else -1 for t in row] for row in targets.tolist()],
                   "loss": float(loss)}, f)
    print("loss", float(loss), "grads", len(grads))


if __name__ == "__main__":
    main()
