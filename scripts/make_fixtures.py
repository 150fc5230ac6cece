#!/usr/bin/env python3
"""Makes the parity fixtures under Tests/Fixtures/: tiny random checkpoints of each supported
architecture, and what the transformers library computes for them.

For each architecture: a Hugging Face folder (config.json, model.safetensors) with random f32
weights from a fixed seed, and reference.json with a 24-token prompt, transformers' logits for
every prompt position, and its 30-token greedy continuation (with the KV cache).

Router weights are scaled up so each token's top-k choice is decided by a clear margin (a
near-tie would make parity depend on the last bit of a float, which proves nothing).

Needs PyTorch, transformers and safetensors from PyPI. Re-running regenerates the same bytes
for the same torch and transformers versions (recorded in reference.json).

    python3 scripts/make_fixtures.py            # all architectures
    python3 scripts/make_fixtures.py mixtral    # one
"""
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "Fixtures")
SEED = 1234
PROMPT_LEN = 24
GEN_LEN = 30
VOCAB = 256

COMMON = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6,
              tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)

ARCHS = {
    "mixtral": ("MixtralConfig", dict(COMMON, intermediate_size=32, num_local_experts=8, num_experts_per_tok=2,
                                      rope_theta=10000.0)),
    "qwen2_moe": ("Qwen2MoeConfig", dict(COMMON, intermediate_size=48, moe_intermediate_size=32, num_experts=8,
                                         num_experts_per_tok=2, shared_expert_intermediate_size=40,
                                         norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[1],
                                         qkv_bias=True,
                                         rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0})),
    "qwen3_moe": ("Qwen3MoeConfig", dict(COMMON, intermediate_size=48, moe_intermediate_size=32, num_experts=8,
                                         num_experts_per_tok=3, norm_topk_prob=True, head_dim=24,
                                         decoder_sparse_step=1, mlp_only_layers=[],
                                         rope_parameters={"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0,
                                                          "original_max_position_embeddings": 64})),
    "olmoe": ("OlmoeConfig", dict(COMMON, intermediate_size=32, num_experts=8, num_experts_per_tok=2,
                                  norm_topk_prob=False, clip_qkv=2.0, rope_theta=10000.0)),
    # Multi-head latent attention with a low-rank q, interleaved YaRN rope with DeepSeek's mscale,
    # sigmoid routing with a correction bias, 4 groups of 2 keeping 2, routed scaling, a shared
    # expert, a dense layer 0. (qwen2_moe uses linear rope scaling, qwen3_moe YaRN.)
    "deepseek_v3": ("DeepseekV3Config", dict(COMMON, num_key_value_heads=4, intermediate_size=48, moe_intermediate_size=16,
                                             n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2, n_group=4,
                                             topk_group=2, routed_scaling_factor=2.5, norm_topk_prob=True,
                                             first_k_dense_replace=1, q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=16,
                                             qk_rope_head_dim=8, v_head_dim=12, rope_interleave=True,
                                             rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0,
                                                              "original_max_position_embeddings": 32, "beta_fast": 32,
                                                              "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0})),
    # DeepSeek-V2: plain q projection, softmax routing, group-limited greedy, no renormalisation.
    "deepseek_v2": ("DeepseekV2Config", dict(COMMON, num_key_value_heads=4, intermediate_size=48, moe_intermediate_size=16,
                                             n_routed_experts=8, n_shared_experts=2, num_experts_per_tok=2, n_group=2,
                                             topk_group=1, topk_method="group_limited_greedy", routed_scaling_factor=2.0,
                                             first_k_dense_replace=1, q_lora_rank=None, kv_lora_rank=16,
                                             qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12, rope_theta=10000.0)),
    # GPT-OSS: attention sinks, sliding (window 8) and full layers alternating, biased attention,
    # a biased router taking the top-k logits then softmax, stacked biased experts with the
    # clamped SwiGLU (a low limit, so the clamp acts), YaRN without truncation.
    "gpt_oss": ("GptOssConfig", dict(COMMON, head_dim=16, intermediate_size=32, num_local_experts=8,
                                     num_experts_per_tok=2, sliding_window=8, swiglu_limit=1.0,
                                     rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 4.0,
                                                      "original_max_position_embeddings": 64, "beta_fast": 32.0,
                                                      "beta_slow": 1.0, "truncate": False})),
    # GLM-4.5: partial rotary (half of each head), per-head QK-norm, q/k/v biases, sigmoid group
    # routing with the correction bias, a shared expert, a dense layer 0.
    "glm4_moe": ("Glm4MoeConfig", dict(COMMON, intermediate_size=48, moe_intermediate_size=16, n_routed_experts=8,
                                       n_shared_experts=1, num_experts_per_tok=2, n_group=4, topk_group=2,
                                       routed_scaling_factor=2.5, norm_topk_prob=True, first_k_dense_replace=1,
                                       use_qk_norm=True, attention_bias=True, partial_rotary_factor=0.5,
                                       rope_theta=10000.0)),
    # The dense bases: Llama with biases on every attention projection, tied embeddings and Llama 3's
    # RoPE scaling;
    # Mistral with a head dim of its own and a sliding window of 12; Qwen2 with q/k/v biases and a
    # window of 10 from layer 1 on; Qwen3 with per-head QK-norm and attention biases.
    "llama": ("LlamaConfig", dict(COMMON, intermediate_size=96, attention_bias=True, tie_word_embeddings=True,
                                  rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                                   "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                   "original_max_position_embeddings": 64})),
    "mistral": ("MistralConfig", dict(COMMON, head_dim=24, intermediate_size=96, sliding_window=12, rope_theta=10000.0)),
    "qwen2": ("Qwen2Config", dict(COMMON, intermediate_size=96, use_sliding_window=True, sliding_window=10,
                                  max_window_layers=1, rope_theta=10000.0)),
    "qwen3": ("Qwen3Config", dict(COMMON, head_dim=24, intermediate_size=96, attention_bias=True, rope_theta=10000.0)),
}


def make(name):
    cls_name, kwargs = ARCHS[name]
    config = getattr(transformers, cls_name)(**kwargs)
    config._attn_implementation = "eager"
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))       # norms near 1, not all equal
            elif pname.endswith("mlp.gate.weight") or pname.endswith("mlp.router.weight") \
                    or "gate.weight" in pname and "experts" not in pname:
                p.normal_(0.0, 1.0)                            # routers: clear top-k margins
            elif pname.endswith("sinks"):
                p.normal_(0.0, 1.0)                            # sinks that take a real share
            elif "bias" in pname:
                p.normal_(0.0, 0.1)
            else:
                p.normal_(0.0, 0.15)
        for bname, b in model.named_buffers():
            if "e_score_correction_bias" in bname:
                b.copy_(0.3 * torch.randn_like(b))              # steers selection, not weights
    model.eval()
    folder = os.path.join(OUT, name)
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    g = torch.Generator().manual_seed(SEED + 1)
    prompt = torch.randint(3, VOCAB, (1, PROMPT_LEN), generator=g)
    with torch.no_grad():
        logits = model(prompt).logits[0].float()
        out = model.generate(prompt, max_new_tokens=GEN_LEN, do_sample=False, eos_token_id=None,
                             pad_token_id=0, use_cache=True)
    reference = {
        "architecture": name,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "prompt": prompt[0].tolist(),
        "logits": [[round(float(v), 6) for v in row] for row in logits],
        "greedy": out[0, PROMPT_LEN:].tolist(),
    }
    with open(os.path.join(folder, "reference.json"), "w") as f:
        json.dump(reference, f, separators=(",", ":"))
    for extra in ("generation_config.json",):
        path = os.path.join(folder, extra)
        if os.path.exists(path):
            os.remove(path)
    print(name, "params", sum(p.numel() for p in model.parameters()), "greedy", reference["greedy"][:10])


if __name__ == "__main__":
    for arch in (sys.argv[1:] or list(ARCHS)):
        make(arch)
