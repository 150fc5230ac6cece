#!/usr/bin/env python3
"""Makes Tests/Fixtures/train_step/: one training step of a tiny Mixtral in PyTorch, for
MoETrain's parity test (same initial weights, same batch: same loss, same gradients); and
Tests/Fixtures/train_<family>/ the same for the other families `moe train --from` trains
(Qwen3-MoE, Qwen2-MoE, OLMoE, DeepSeek-V3 and V2, GLM-4.5, GPT-OSS, Llama, Mistral).

Writes the checkpoint (config.json, model.safetensors), the batch and loss (reference.json),
and every parameter's gradient under its on-disk name (grads.safetensors; transformers 5 fuses
the experts in memory, so their gradients are split back into w1, w3 and w2). The router
auxiliary loss is off: transformers pools it over all layers, MoEKit computes it per layer.

    python3 scripts/make_train_fixture.py              # all
    python3 scripts/make_train_fixture.py qwen3_moe    # one (mixtral writes train_step)
"""
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "Fixtures", "train_step")
SEED = 4321


COMMON = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              rms_norm_eps=1e-6, tie_word_embeddings=False, max_position_embeddings=64, rope_theta=10000.0)

FAMILIES = {
    # The first fixture (Tests/Fixtures/train_step/): Mixtral, its experts saved as w1/w3/w2.
    "mixtral": ("MixtralConfig", dict(COMMON, intermediate_size=16, num_local_experts=4, num_experts_per_tok=2,
                                      router_aux_loss_coef=0.0)),
    # Per-head QK-norm, renormalised top-3 routing.
    "qwen3_moe": ("Qwen3MoeConfig", dict(COMMON, head_dim=12, intermediate_size=24, moe_intermediate_size=16, num_experts=4,
                                         num_experts_per_tok=3, norm_topk_prob=True, decoder_sparse_step=1,
                                         mlp_only_layers=[], router_aux_loss_coef=0.0)),
    # q/k/v biases, a shared expert behind a sigmoid gate, a dense layer (mlp_only_layers).
    "qwen2_moe": ("Qwen2MoeConfig", dict(COMMON, intermediate_size=24, moe_intermediate_size=16, num_experts=4,
                                         num_experts_per_tok=2, shared_expert_intermediate_size=20, norm_topk_prob=False,
                                         decoder_sparse_step=1, mlp_only_layers=[0], qkv_bias=True,
                                         router_aux_loss_coef=0.0)),
    # QK-norm over the whole projection, and clip_qkv low enough to clip.
    "olmoe": ("OlmoeConfig", dict(COMMON, intermediate_size=16, num_experts=4, num_experts_per_tok=2, norm_topk_prob=False,
                                  clip_qkv=0.5, router_aux_loss_coef=0.0)),
    # Partial rotary, per-head QK-norm, q/k/v biases, sigmoid group routing with the correction
    # bias, a shared expert, a dense layer 0.
    "glm4_moe": ("Glm4MoeConfig", dict(COMMON, intermediate_size=24, moe_intermediate_size=8, n_routed_experts=4,
                                       n_shared_experts=1, num_experts_per_tok=2, n_group=2, topk_group=1,
                                       routed_scaling_factor=2.5, norm_topk_prob=True, first_k_dense_replace=1,
                                       use_qk_norm=True, attention_bias=True, partial_rotary_factor=0.5)),
    # Sinks, alternating sliding (5) and full layers, attention biases, a biased router, biased
    # stacked experts with the clamped SwiGLU (a low limit, so the clamps act).
    "gpt_oss": ("GptOssConfig", dict(COMMON, head_dim=8, intermediate_size=16, num_local_experts=4, num_experts_per_tok=2,
                                     sliding_window=5, swiglu_limit=0.6, router_aux_loss_coef=0.0,
                                     rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 4.0,
                                                      "original_max_position_embeddings": 16, "beta_fast": 32.0,
                                                      "beta_slow": 1.0, "truncate": False})),
    # Multi-head latent attention with a q LoRA and interleaved YaRN rope (DeepSeek's mscale),
    # sigmoid group routing with the correction bias and routed scaling, a shared expert, a
    # dense layer 0.
    "deepseek_v3": ("DeepseekV3Config", dict(COMMON, num_key_value_heads=4, intermediate_size=24, moe_intermediate_size=8,
                                             n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2, n_group=2,
                                             topk_group=1, routed_scaling_factor=2.5, norm_topk_prob=True,
                                             first_k_dense_replace=1, q_lora_rank=12, kv_lora_rank=8, qk_nope_head_dim=8,
                                             qk_rope_head_dim=4, v_head_dim=6, rope_interleave=True,
                                             rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                                              "original_max_position_embeddings": 8, "beta_fast": 32,
                                                              "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0})),
    # A plain q projection, softmax group-limited greedy routing, values wider than keys.
    "deepseek_v2": ("DeepseekV2Config", dict(COMMON, num_key_value_heads=4, intermediate_size=24, moe_intermediate_size=8,
                                             n_routed_experts=4, n_shared_experts=2, num_experts_per_tok=2, n_group=2,
                                             topk_group=1, topk_method="group_limited_greedy", routed_scaling_factor=2.0,
                                             first_k_dense_replace=1, q_lora_rank=None, kv_lora_rank=8,
                                             qk_nope_head_dim=4, qk_rope_head_dim=4, v_head_dim=12)),
    # Dense: tied embeddings and biases on every attention projection; a sliding window of 5.
    "llama": ("LlamaConfig", dict(COMMON, intermediate_size=40, attention_bias=True, tie_word_embeddings=True)),
    "mistral": ("MistralConfig", dict(COMMON, intermediate_size=40, sliding_window=5)),
}


# Checkpoint names of the expert projections (gate, up, down) and of the MoE block, per family.
EXPERT_NAMES = {"mixtral": ("w1", "w3", "w2", "block_sparse_moe")}


def family(name):
    """One training step of `name` from FAMILIES, into Tests/Fixtures/train_<name>/ (train_step
    for Mixtral)."""
    cls_name, kwargs = FAMILIES[name]
    config = getattr(transformers, cls_name)(**kwargs)
    config._attn_implementation = "eager"
    torch.manual_seed(SEED)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif pname.endswith("mlp.gate.weight") or pname.endswith("mlp.router.weight") or pname.endswith("sinks"):
                p.normal_(0.0, 1.0)
            elif "bias" in pname:
                p.normal_(0.0, 0.1)
            else:
                p.normal_(0.0, 0.1)
        for bname, b in model.named_buffers():
            if "e_score_correction_bias" in bname:
                b.copy_(0.3 * torch.randn_like(b))
    out = os.path.join(HERE, "..", "Tests", "Fixtures", "train_step" if name == "mixtral" else f"train_{name}")
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    gen = os.path.join(out, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    g = torch.Generator().manual_seed(SEED + 1)
    ids = torch.randint(0, 64, (2, 12), generator=g)
    targets = torch.cat([ids[:, 1:], torch.full((2, 1), -100)], dim=1)
    model.train()
    logits = model(ids).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 64), targets.reshape(-1), ignore_index=-100)
    loss.backward()
    gate, up, down, block = EXPERT_NAMES.get(name, ("gate_proj", "up_proj", "down_proj", "mlp"))
    grads = {}
    for pname, p in model.named_parameters():
        grad = p.grad.detach().clone().contiguous()
        pname = pname.replace(".mlp.", f".{block}.")  # the block's name on disk
        if name == "gpt_oss" and "experts." in pname:  # stored stacked: [E, d, 2I] interleaved, [E, I, d]
            prefix = pname[:pname.index("experts.") + len("experts.")]
            for e in range(grad.shape[0]):
                if pname.endswith("gate_up_proj"):
                    grads[f"{prefix}{e}.gate_proj.weight"] = grad[e, :, 0::2].T.contiguous()
                    grads[f"{prefix}{e}.up_proj.weight"] = grad[e, :, 1::2].T.contiguous()
                elif pname.endswith("gate_up_proj_bias"):
                    grads[f"{prefix}{e}.gate_proj.bias"] = grad[e, 0::2].contiguous()
                    grads[f"{prefix}{e}.up_proj.bias"] = grad[e, 1::2].contiguous()
                elif pname.endswith("down_proj"):
                    grads[f"{prefix}{e}.down_proj.weight"] = grad[e].T.contiguous()
                else:
                    grads[f"{prefix}{e}.down_proj.bias"] = grad[e].contiguous()
        elif pname.endswith("experts.gate_up_proj"):     # transformers 5 fuses the experts in memory
            prefix = pname.replace("gate_up_proj", "")
            half = grad.shape[1] // 2
            for e in range(grad.shape[0]):
                grads[f"{prefix}{e}.{gate}.weight"] = grad[e, :half].contiguous()
                grads[f"{prefix}{e}.{up}.weight"] = grad[e, half:].contiguous()
        elif pname.endswith("experts.down_proj"):
            prefix = pname.replace("down_proj", "")
            for e in range(grad.shape[0]):
                grads[f"{prefix}{e}.{down}.weight"] = grad[e].contiguous()
        else:
            grads[pname] = grad
    save_file(grads, os.path.join(out, "grads.safetensors"))
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump({"torch": torch.__version__, "transformers": transformers.__version__,
                   "input_ids": ids.tolist(), "targets": [[t if t >= 0 else -1 for t in row] for row in targets.tolist()],
                   "loss": float(loss)}, f)
    print(name, "loss", float(loss), "grads", len(grads))


if __name__ == "__main__":
    for arch in (sys.argv[1:] or list(FAMILIES)):
        family(arch)
