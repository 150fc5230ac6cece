#!/usr/bin/env python3
"""Makes Tests/Fixtures/gpt_oss_mxfp4/: the tiny GPT-OSS checkpoint of Tests/Fixtures/gpt_oss
with its experts stored as GPT-OSS publishes them, in MXFP4 (`*_blocks` [E, rows, K/32, 16]
uint8, two values per byte, low nibble first; `*_scales` [E, rows, K/32] uint8 e8m0), and the
logits transformers computes for it: transformers' own MXFP4 dequantization
(`convert_moe_packed_tensors`) gives the expert weights, its GPT-OSS model the logits.

The MXFP4 values are ggml's rounding of the f32 experts (the gguf package's quantizer),
repacked into GPT-OSS's nibble order.

    python3 scripts/make_mxfp4_fixture.py      (after scripts/make_fixtures.py made gpt_oss/)
"""
import json
import os
import shutil

import gguf
import numpy as np
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers.integrations.mxfp4 import convert_moe_packed_tensors

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "Tests", "Fixtures", "gpt_oss")
OUT = os.path.join(HERE, "..", "Tests", "Fixtures", "gpt_oss_mxfp4")


def to_mxfp4(w):
    """[E, K, R] input-major f32 (GPT-OSS's layout) -> blocks [E, R, K/32, 16], scales [E, R, K/32]."""
    rows = w.transpose(1, 2).contiguous().numpy().astype(np.float32)  # [E, R, K]
    e, r, k = rows.shape
    q = gguf.quants.quantize(rows.reshape(e * r, k), gguf.GGMLQuantizationType.MXFP4)
    q = q.reshape(e, r, k // 32, 17)
    scales = q[..., 0].copy()
    ggml = q[..., 1:]  # value j in the low nibble of byte j (j < 16), value j + 16 in its high nibble
    values = np.concatenate([ggml & 0x0F, ggml >> 4], axis=-1)  # [.., 32] in order
    blocks = (values[..., 0::2] | (values[..., 1::2] << 4)).astype(np.uint8)  # GPT-OSS: pairs, low first
    return torch.from_numpy(blocks), torch.from_numpy(scales.astype(np.uint8))


def main():
    os.makedirs(OUT, exist_ok=True)
    tensors = load_file(os.path.join(SRC, "model.safetensors"))
    config = json.load(open(os.path.join(SRC, "config.json")))
    ref = json.load(open(os.path.join(SRC, "reference.json")))
    out, dense = {}, {}
    for name, t in tensors.items():
        if name.endswith("mlp.experts.gate_up_proj") or name.endswith("mlp.experts.down_proj"):
            blocks, scales = to_mxfp4(t)
            out[name + "_blocks"], out[name + "_scales"] = blocks, scales
            dense[name] = convert_moe_packed_tensors(blocks, scales, dtype=torch.float32)  # [E, K, R] again
        else:
            out[name] = t
    save_file(out, os.path.join(OUT, "model.safetensors"), metadata={"format": "pt"})
    config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn",
                                                                                          "model.layers.*.mlp.router",
                                                                                          "model.embed_tokens", "lm_head"]}
    json.dump(config, open(os.path.join(OUT, "config.json"), "w"), indent=2)

    model_config = transformers.AutoConfig.from_pretrained(SRC)
    model_config._attn_implementation = "eager"
    model = transformers.AutoModelForCausalLM.from_pretrained(SRC, config=model_config, dtype=torch.float32)
    state = model.state_dict()
    for name, w in dense.items():
        assert state[name].shape == w.shape, (name, state[name].shape, w.shape)
        state[name].copy_(w)
    model.eval()
    prompt = torch.tensor([ref["prompt"]])
    with torch.no_grad():
        logits = model(prompt).logits[0].float()
        greedy = model.generate(prompt, max_new_tokens=len(ref["greedy"]), do_sample=False)[0, prompt.shape[1]:]
    json.dump({"architecture": "gpt_oss", "torch": torch.__version__, "transformers": transformers.__version__,
               "prompt": ref["prompt"], "logits": [[round(float(v), 6) for v in row] for row in logits],
               "greedy": greedy.tolist()}, open(os.path.join(OUT, "reference.json"), "w"), separators=(",", ":"))
    if os.path.exists(os.path.join(SRC, "tokenizer.json")):
        shutil.copy(os.path.join(SRC, "tokenizer.json"), OUT)
    print("gpt_oss_mxfp4 done")


if __name__ == "__main__":
    main()
