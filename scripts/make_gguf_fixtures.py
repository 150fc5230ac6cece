#!/usr/bin/env python3
"""Makes Tests/Fixtures/gguf/: a small GGUF file written by the `gguf` Python package (metadata
of every value type, arrays and nested arrays; tensors in F32, F16, BF16, Q8_0, Q4_K, Q6_K and
MXFP4, one of them 3-D as stacked experts are), and expected.json: what the package's own
reader gives for it (every metadata value; each tensor's row-major shape, type and
dequantized values, base64 little-endian f32).

    python3 scripts/make_gguf_fixtures.py
"""
import base64
import json
import os

import gguf
import numpy as np
from gguf.constants import GGML_QUANT_SIZES

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "Fixtures", "gguf")
T = gguf.GGMLQuantizationType


def random_blocks(rng, qtype, rows, cols, f16_fields):
    block, size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(rows * cols // block, size), dtype=np.uint8)
    for off in f16_fields:
        raw[:, off:off + 2] = (rng.standard_normal(raw.shape[0]) * 0.05).astype(np.float16).view(np.uint8).reshape(-1, 2)
    return raw.reshape(rows, cols // block * size)


def main():
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "tiny.gguf")
    rng = np.random.default_rng(7)
    w = gguf.GGUFWriter(path, "olmoe")
    w.add_uint32("olmoe.block_count", 2)
    w.add_uint64("olmoe.context_length", 4096)
    w.add_int32("test.int32", -5)
    w.add_int8("test.int8", -7)
    w.add_uint8("test.uint8", 200)
    w.add_int16("test.int16", -300)
    w.add_uint16("test.uint16", 60000)
    w.add_int64("test.int64", -(2 ** 40))
    w.add_float32("olmoe.rope.freq_base", 10000.0)
    w.add_float64("test.float64", 0.125)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo 世界")
    w.add_array("tokenizer.ggml.tokens", ["a", "b", "<|endoftext|>"])
    w.add_array("test.ints", [1, 2, 3])
    w.add_array("test.nested", [[1, 2], [3]])
    w.add_custom_alignment(64)  # general.alignment, and the writer pads to it
    tensors = {
        "token_embd.weight": rng.standard_normal((8, 64)).astype(np.float32),
        "blk.0.attn_norm.weight": rng.standard_normal(64).astype(np.float16),
        "blk.0.attn_q.weight": gguf.quants.quantize(rng.standard_normal((4, 64)).astype(np.float32), T.Q8_0),
        "blk.0.ffn_down_exps.weight": random_blocks(rng, T.Q4_K, 6, 256, [0, 2]),
        "blk.0.ffn_up_exps.weight": random_blocks(rng, T.Q6_K, 2, 256, [208]),
        "blk.0.ffn_gate_exps.weight": gguf.quants.quantize(rng.standard_normal((4, 64)).astype(np.float32), T.MXFP4),
    }
    w.add_tensor("token_embd.weight", tensors["token_embd.weight"])
    w.add_tensor("blk.0.attn_norm.weight", tensors["blk.0.attn_norm.weight"])
    w.add_tensor("blk.0.attn_q.weight", tensors["blk.0.attn_q.weight"], raw_dtype=T.Q8_0)
    # Stacked experts: [2 experts, 3 rows, 256 columns] in Q4_K.
    w.add_tensor("blk.0.ffn_down_exps.weight", tensors["blk.0.ffn_down_exps.weight"].reshape(2, 3, -1), raw_dtype=T.Q4_K)
    w.add_tensor("blk.0.ffn_up_exps.weight", tensors["blk.0.ffn_up_exps.weight"], raw_dtype=T.Q6_K)
    w.add_tensor("blk.0.ffn_gate_exps.weight", tensors["blk.0.ffn_gate_exps.weight"], raw_dtype=T.MXFP4)
    bf = rng.standard_normal((2, 32)).astype(np.float32)
    w.add_tensor("output_norm.weight", gguf.quants.quantize(bf, T.BF16), raw_dtype=T.BF16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    r = gguf.GGUFReader(path)
    expected = {"version": 3, "alignment": 64, "metadata": {}, "tensors": {}}
    for field in r.fields.values():
        if field.name.startswith("GGUF."):
            continue
        expected["metadata"][field.name] = field.contents()
    for t in r.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
        expected["tensors"][t.name] = {"shape": [int(d) for d in reversed(t.shape.tolist())],
                                       "type": t.tensor_type.name.lower(),
                                       "values": base64.b64encode(values.astype("<f4").tobytes()).decode()}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
    print("wrote", path, os.path.getsize(path), "bytes,", len(expected["tensors"]), "tensors")


if __name__ == "__main__":
    main()
