#!/usr/bin/env python3
"""Makes Tests/Fixtures/gguf_models/: tiny checkpoints made by transformers (seeded), converted
to GGUF by llama.cpp's own convert_hf_to_gguf.py (from the llama-cpp-python sdist, fetched by
scripts/build-llama-cpp.sh), with transformers' logits for a prompt, so MoEKit's GGUF path is
checked against the checkpoint it came from.

Writes <family>.f32.gguf (and a bf16 one for one family) and <family>.json (the prompt and the
logits); then llama.cpp's llama-quantize makes qwen3_moe.q8_0.gguf, and a wider Qwen3-MoE
(rows of 256, so the k-quants apply) becomes wide_qwen3_moe.q4_k_m.gguf (its f32 file is not
kept: quantized files are checked against their own dequantized weights). The byte-level tokenizer of these checkpoints is unknown to the converter's
pre-tokenizer table, so the conversion is told it is GPT-2's (the weights and metadata are
converted by llama.cpp's code unchanged).

    scripts/build-llama-cpp.sh && python3 scripts/make_gguf_model_fixtures.py [.llama.cpp [FAMILY ...]]

LLAMA is the folder scripts/build-llama-cpp.sh filled (its src/ and build/bin/).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "Fixtures", "gguf_models")
LLAMA = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", ".llama.cpp"))
SEED = 99
VOCAB = 320
COMMON = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=256,
              eos_token_id=256, rope_theta=10000.0)
FAMILIES = {
    "llama": ("LlamaConfig", dict(COMMON, intermediate_size=96)),
    "mixtral": ("MixtralConfig", dict(COMMON, intermediate_size=32, num_local_experts=4, num_experts_per_tok=2)),
    "qwen3_moe": ("Qwen3MoeConfig", dict(COMMON, intermediate_size=48, moe_intermediate_size=32, num_experts=4,
                                         num_experts_per_tok=2, norm_topk_prob=True, head_dim=16)),
    "olmoe": ("OlmoeConfig", dict(COMMON, intermediate_size=32, num_experts=4, num_experts_per_tok=2, norm_topk_prob=False)),
    "qwen2_moe": ("Qwen2MoeConfig", dict(COMMON, intermediate_size=48, moe_intermediate_size=32, num_experts=4,
                                         num_experts_per_tok=2, shared_expert_intermediate_size=40, norm_topk_prob=False,
                                         qkv_bias=True)),
    "gpt_oss": ("GptOssConfig", dict(COMMON, intermediate_size=32, num_local_experts=4, num_experts_per_tok=2, head_dim=16,
                                     sliding_window=8, attention_bias=True)),
    "deepseek_v3": ("DeepseekV3Config", dict(COMMON, num_key_value_heads=4, intermediate_size=48, moe_intermediate_size=16,
                                             n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2, n_group=4,
                                             topk_group=2, routed_scaling_factor=2.5, norm_topk_prob=True,
                                             first_k_dense_replace=1, q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=16,
                                             qk_rope_head_dim=8, v_head_dim=12, rope_interleave=True,
                                             rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0,
                                                              "original_max_position_embeddings": 32, "beta_fast": 32,
                                                              "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0})),
    "deepseek_v2": ("DeepseekV2Config", dict(COMMON, num_key_value_heads=4, intermediate_size=48, moe_intermediate_size=16,
                                             n_routed_experts=8, n_shared_experts=2, num_experts_per_tok=2, n_group=2,
                                             topk_group=1, topk_method="group_limited_greedy", routed_scaling_factor=2.0,
                                             first_k_dense_replace=1, q_lora_rank=None, kv_lora_rank=16,
                                             qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12)),
    "glm4_moe": ("Glm4MoeConfig", dict(COMMON, num_key_value_heads=2, head_dim=16, intermediate_size=48, moe_intermediate_size=16,
                                       n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2, n_group=2, topk_group=1,
                                       routed_scaling_factor=2.5, norm_topk_prob=True, first_k_dense_replace=1,
                                       use_qk_norm=True, attention_bias=True, partial_rotary_factor=0.5)),
}
BF16 = {"qwen3_moe"}
# Quantized by llama-quantize, not kept in f32: (family, file stem, config, llama.cpp type).
QUANTIZED = [("qwen3_moe", "qwen3_moe", None, "Q8_0"),
             ("qwen3_moe", "wide_qwen3_moe", dict(COMMON, hidden_size=256, num_hidden_layers=1, intermediate_size=256,
                                                  moe_intermediate_size=256, num_experts=4, num_experts_per_tok=2,
                                                  norm_topk_prob=True, head_dim=64), "Q4_K_M")]

CONVERT = f"""
import sys
sys.path.insert(0, {os.path.join(LLAMA, 'src')!r})
sys.path.insert(0, {os.path.join(LLAMA, 'src', 'gguf-py')!r})
sys.argv = ["convert_hf_to_gguf.py"] + sys.argv[1:]
import convert_hf_to_gguf as c
from conversion import base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
from conversion import glm
glm.Glm4MoeModel.set_vocab = lambda self: self._set_vocab_gpt2()  # GLM's own needs its [gMASK] and <sop> tokens
c.main()
"""


def tokenizer_json():
    """A byte-level BPE tokenizer.json: the 256 bytes as ids 0..255 and <|endoftext|> as 256."""
    table = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = table[:], 0
    for b in range(256):
        if b not in table:
            table.append(b)
            cs.append(256 + n)
            n += 1
    vocab = {chr(c): b for b, c in zip(table, cs)}
    level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {"version": "1.0", "added_tokens": [{"id": 256, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                                                 "rstrip": False, "normalized": False, "special": True}],
            "normalizer": None, "pre_tokenizer": level, "post_processor": level, "decoder": level,
            "model": {"type": "BPE", "vocab": vocab, "merges": [], "dropout": None, "unk_token": None,
                      "fuse_unk": False, "byte_fallback": False, "ignore_merges": False}}


def make(name, kwargs=None, stem=None, quantize=None):
    cls_name, default = FAMILIES[name]
    kwargs = kwargs or default
    stem = stem or name
    config = getattr(transformers, cls_name)(**kwargs)
    config._attn_implementation = "eager"
    torch.manual_seed(SEED)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif pname.endswith("mlp.gate.weight") or pname.endswith("block_sparse_moe.gate.weight"):
                p.normal_(0.0, 1.0)
            else:
                p.normal_(0.0, 0.15)
    model.eval()
    prompt = torch.randint(0, 256, (1, 20), generator=torch.Generator().manual_seed(SEED + 1))
    with torch.no_grad():
        logits = model(prompt).logits[0].float()
    with tempfile.TemporaryDirectory() as scratch:
        tmp = os.path.join(scratch, stem)  # the converter names the model after its folder: keep it fixed
        model.save_pretrained(tmp, safe_serialization=True)
        with open(os.path.join(tmp, "tokenizer.json"), "w") as f:
            json.dump(tokenizer_json(), f)
        if quantize:
            f32 = os.path.join(scratch, "model.f32.gguf")
            subprocess.run([sys.executable, "-c", CONVERT, tmp, "--outfile", f32, "--outtype", "f32"], check=True,
                           capture_output=True)
            out = os.path.join(OUT, f"{stem}.{quantize.lower()}.gguf")
            subprocess.run([os.path.join(LLAMA, "build", "bin", "llama-quantize"), f32, out, quantize], check=True,
                           capture_output=True)
            print(stem, quantize, "done")
            return
        for kind in ["f32"] + (["bf16"] if name in BF16 else []):
            out = os.path.join(OUT, f"{name}.{kind}.gguf")
            subprocess.run([sys.executable, "-c", CONVERT, tmp, "--outfile", out, "--outtype", kind], check=True,
                           capture_output=True)
    with open(os.path.join(OUT, f"{name}.json"), "w") as f:
        json.dump({"transformers": transformers.__version__, "prompt": prompt[0].tolist(),
                   "logits": [[round(float(v), 6) for v in row] for row in logits]}, f, separators=(",", ":"))
    print(name, "done")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    only = set(sys.argv[2:])  # optional: just these families (and no quantized files)
    for family in FAMILIES:
        if not only or family in only:
            make(family)
    for family, stem, kwargs, kind in QUANTIZED:
        if not only:
            make(family, kwargs, stem, kind)
