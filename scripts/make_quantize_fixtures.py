#!/usr/bin/env python3
"""Makes Tests/Fixtures/quantize/: what llama.cpp's llama-quantize writes, the oracle for
`moe quantize`.

blocks.json: rows of f32 values with the cases quantizers get wrong (a normal spread, outliers,
all zeros, a constant, all negative, tiny and huge magnitudes, a ramp), and the bytes
llama-quantize --pure writes for them in every format MoEKit writes. The rows are put in place
of one tensor of a tiny f32 GGUF made by llama.cpp's convert_hf_to_gguf.py; llama-quantize
then quantizes the file and the tensor's bytes are read back.

blocks.json also holds an importance vector (one weight per column) and the bytes
llama-quantize --pure --imatrix writes with it (an imatrix GGUF made here holding only that
tensor's entry): the oracle for the importance-weighted quantizers.

mixes.json: the type llama-quantize gives every tensor of tiny models (a dense Llama, one with 4
query heads per key-value head, an 8-expert Mixtral, a 4-expert OLMoE and a Qwen3-MoE with rows
too short for the k-quants), for
every preset: the per-tensor mix rules and their fallbacks, without committing the models.

    scripts/build-llama-cpp.sh && python3 scripts/make_quantize_fixtures.py [.llama.cpp]

Needs torch, transformers and sentencepiece from PyPI (llama.cpp's converter loads the Llama
models' vocabulary through sentencepiece).
"""
import base64
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "Fixtures", "quantize")
LLAMA = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", ".llama.cpp"))
sys.path[:0] = [os.path.join(LLAMA, "src"), os.path.join(LLAMA, "src", "gguf-py")]
import gguf  # noqa: E402  (llama.cpp's own copy, matching its tools)

sys.path.insert(0, HERE)
from make_gguf_model_fixtures import CONVERT, tokenizer_json  # noqa: E402

QUANTIZE = os.path.join(LLAMA, "build", "bin", "llama-quantize")
PRESETS = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S",
           "Q5_K_M", "Q6_K", "IQ4_NL", "IQ4_XS", "MXFP4_MOE"]
# --pure file type for each block format: every quantizable tensor in that format.
PURE = {"q8_0": "Q8_0", "q4_0": "Q4_0", "q4_1": "Q4_1", "q5_0": "Q5_0", "q5_1": "Q5_1", "q2_k": "Q2_K",
        "q3_k": "Q3_K_S", "q4_k": "Q4_K_S", "q5_k": "Q5_K_S", "q6_k": "Q6_K", "iq4_nl": "IQ4_NL", "iq4_xs": "IQ4_XS"}
COMMON = dict(vocab_size=320, hidden_size=256, num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=256,
              eos_token_id=256, rope_theta=10000.0)
MODELS = {
    "llama": ("LlamaConfig", dict(COMMON, intermediate_size=512)),
    # 4 query heads per key-value head: the Q2_K and IQ4_* rules for attn_v.
    "llama_gqa4": ("LlamaConfig", dict(COMMON, intermediate_size=512, num_attention_heads=8)),
    "mixtral": ("MixtralConfig", dict(COMMON, intermediate_size=256, num_local_experts=8, num_experts_per_tok=2)),
    "olmoe": ("OlmoeConfig", dict(COMMON, intermediate_size=256, num_experts=4, num_experts_per_tok=2)),
    "qwen3_moe": ("Qwen3MoeConfig", dict(COMMON, num_hidden_layers=4, intermediate_size=96, moe_intermediate_size=96,
                                         num_experts=4, num_experts_per_tok=2, head_dim=64)),
}


def convert(name, scratch):
    cls_name, kwargs = MODELS[name]
    torch.manual_seed(7)
    model = transformers.AutoModelForCausalLM.from_config(getattr(transformers, cls_name)(**kwargs), dtype=torch.float32)
    folder = os.path.join(scratch, name)
    model.save_pretrained(folder, safe_serialization=True)
    with open(os.path.join(folder, "tokenizer.json"), "w") as f:
        json.dump(tokenizer_json(), f)
    out = os.path.join(scratch, f"{name}.f32.gguf")
    subprocess.run([sys.executable, "-c", CONVERT, folder, "--outfile", out, "--outtype", "f32"], check=True,
                   capture_output=True)
    return out


def quantize(src, dst, preset, pure=False, imatrix=None):
    args = (["--pure"] if pure else []) + (["--imatrix", imatrix] if imatrix else [])
    subprocess.run([QUANTIZE] + args + [src, dst, preset], check=True, capture_output=True)
    return gguf.GGUFReader(dst)


def importance_vector(columns):
    """Positive weights spanning four decades, with a dead block of 32 and scattered zeros."""
    rng = np.random.RandomState(11)
    w = (rng.lognormal(0.0, 1.2, columns) * 0.5).astype(np.float32)
    w[64:96] = 0
    w[::53] = 0
    return w


def write_imatrix(path, entries):
    """An imatrix GGUF as llama-imatrix writes it: NAME.in_sum2 [nmat, n] and NAME.counts [nmat, 1]."""
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_string("general.type", "imatrix")
    writer.add_array("imatrix.datasets", ["fixture"])
    writer.add_uint32("imatrix.chunk_count", 1)
    writer.add_uint32("imatrix.chunk_size", 512)
    for name, (sums, counts) in entries.items():
        writer.add_tensor(f"{name}.in_sum2", np.asarray(sums, dtype=np.float32).reshape(len(counts), -1))
        writer.add_tensor(f"{name}.counts", np.asarray(counts, dtype=np.float32).reshape(len(counts), 1))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_rows():
    """16 rows of 512 values: the cases a quantizer must get right."""
    rng = np.random.RandomState(5)
    rows = [rng.randn(512), rng.randn(512) * 0.02, np.zeros(512), np.full(512, 0.37), -np.abs(rng.randn(512)),
            rng.randn(512) * 1e-6, rng.randn(512) * 300.0, np.linspace(-1, 1, 512), np.abs(rng.randn(512)),
            rng.standard_t(2, 512), rng.uniform(-1, 1, 512)]
    spiky = rng.randn(512) * 0.1
    spiky[::37] = 25.0
    rows.append(spiky)
    half = rng.randn(512)
    half[:256] = 0
    rows.append(half)
    rows += [rng.randn(512) * s for s in (0.5, 2.0, 7.0)]
    return np.stack(rows).astype(np.float32)


def replace_tensor(src, dst, name, values):
    """`src` with tensor `name` (f32, shape of `values`) replaced, everything else copied."""
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        value, kind = field.contents(), field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(field.name, value, kind, sub_type=field.types[-1])
        else:
            writer.add_key_value(field.name, value, kind)
    for t in reader.tensors:  # every tensor of the f32 file is f32
        writer.add_tensor(t.name, values if t.name == name else np.asarray(t.data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main():
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        mixes = {}
        for name in MODELS:
            src = convert(name, scratch)
            reader = gguf.GGUFReader(src)
            arch = reader.fields["general.architecture"].contents()
            heads = int(reader.fields[f"{arch}.attention.head_count"].contents())
            entry = {"arch": arch, "block_count": int(reader.fields[f"{arch}.block_count"].contents()),
                     "head_count": heads, "head_count_kv": int(reader.fields[f"{arch}.attention.head_count_kv"].contents())
                     if f"{arch}.attention.head_count_kv" in reader.fields else heads,
                     "expert_count": int(reader.fields[f"{arch}.expert_count"].contents())
                     if f"{arch}.expert_count" in reader.fields else 0,
                     "tensors": [{"name": t.name, "shape": [int(x) for x in reversed(t.shape)]} for t in reader.tensors],
                     "presets": {}}
            for preset in PRESETS:
                out = quantize(src, os.path.join(scratch, f"{name}.{preset}.gguf"), preset)
                entry["presets"][preset.lower()] = {t.name: t.tensor_type.name.lower() for t in out.tensors}
            mixes[name] = entry
            print(name, "mixes done")
        with open(os.path.join(OUT, "mixes.json"), "w") as f:
            json.dump(mixes, f, indent=1, sort_keys=True)

        rows = test_rows()
        target = "blk.0.ffn_down.weight"  # [256, 512] in the Llama model: 512 columns per row
        src = os.path.join(scratch, "llama.f32.gguf")
        shape = list(np.asarray(next(t for t in gguf.GGUFReader(src).tensors if t.name == target).data).shape)
        assert shape[1] == rows.shape[1], shape
        values = np.zeros(shape, dtype=np.float32)
        values[:rows.shape[0]] = rows
        edited = os.path.join(scratch, "edited.f32.gguf")
        replace_tensor(src, edited, target, values)
        blocks = {"columns": rows.shape[1], "rows": rows.shape[0],
                  "input": base64.b64encode(rows.tobytes()).decode(), "formats": {}}
        for fmt, preset in PURE.items():
            out = quantize(edited, os.path.join(scratch, f"pure.{fmt}.gguf"), preset, pure=True)
            t = next(t for t in out.tensors if t.name == target)
            assert t.tensor_type.name.lower() == fmt, (fmt, t.tensor_type.name)
            data = np.asarray(t.data).view(np.uint8).reshape(shape[0], -1)[:rows.shape[0]]
            blocks["formats"][fmt] = base64.b64encode(data.tobytes()).decode()
        importance = importance_vector(rows.shape[1])
        imatrix = os.path.join(scratch, "imatrix.gguf")
        write_imatrix(imatrix, {target: (importance * 3, [3])})  # sums over 3 rows: the mean is `importance`
        blocks["importance"] = base64.b64encode(importance.tobytes()).decode()
        blocks["weighted_formats"] = {}
        for fmt, preset in PURE.items():
            out = quantize(edited, os.path.join(scratch, f"weighted.{fmt}.gguf"), preset, pure=True, imatrix=imatrix)
            t = next(t for t in out.tensors if t.name == target)
            assert t.tensor_type.name.lower() == fmt, (fmt, t.tensor_type.name)
            data = np.asarray(t.data).view(np.uint8).reshape(shape[0], -1)[:rows.shape[0]]
            blocks["weighted_formats"][fmt] = base64.b64encode(data.tobytes()).decode()
        # MXFP4_MOE puts only expert tensors in MXFP4: the gguf package's quantizer (ggml's) is the oracle.
        blocks["formats"]["mxfp4"] = base64.b64encode(
            gguf.quants.quantize(rows, gguf.GGMLQuantizationType.MXFP4).tobytes()).decode()
        with open(os.path.join(OUT, "blocks.json"), "w") as f:
            json.dump(blocks, f)
        print("blocks done")


if __name__ == "__main__":
    main()
