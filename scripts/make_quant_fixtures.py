#!/usr/bin/env python3
"""Makes Tests/Fixtures/quant/vectors.json: for every block format MoEKit reads, random blocks
(random bits, with finite scales) and what the `gguf` Python package's dequantization gives
for them, so MoEKit's dequantization is checked bit for bit against the package.

Each entry: the ggml type name, the block bytes and the expected f32 values, both base64
(little-endian). Needs numpy and gguf from PyPI; seeded, so it regenerates the same bytes.

    python3 scripts/make_quant_fixtures.py
"""
import base64
import json
import os

import gguf
import numpy as np
from gguf.constants import GGML_QUANT_SIZES

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "Fixtures", "quant", "vectors.json")
T = gguf.GGMLQuantizationType

# Offsets of each format's f16 scale fields (d, and m / dmin), which get finite values.
F16_FIELDS = {
    "Q8_0": [0], "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "IQ4_NL": [0],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208], "IQ4_XS": [0],
    "MXFP4": [],
}
BLOCKS = 6


def main():
    rng = np.random.default_rng(20261203)
    out = {"gguf": gguf.__version__ if hasattr(gguf, "__version__") else "unknown", "formats": []}
    for name, fields in F16_FIELDS.items():
        qtype = getattr(T, name)
        block, size = GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, size=(BLOCKS, size), dtype=np.uint8)
        for off in fields:
            scale = (rng.standard_normal(BLOCKS) * 0.05).astype(np.float16)
            raw[:, off:off + 2] = scale.view(np.uint8).reshape(BLOCKS, 2)
        if name == "MXFP4":
            raw[:, 0] = rng.integers(110, 141, size=BLOCKS, dtype=np.uint8)  # e8m0 exponents of moderate size
        values = gguf.quants.dequantize(raw.reshape(-1), qtype).astype(np.float32)
        assert values.size == BLOCKS * block and np.isfinite(values).all()
        out["formats"].append({"type": name.lower(), "elements": int(values.size),
                               "bytes": base64.b64encode(raw.tobytes()).decode(),
                               "values": base64.b64encode(values.astype("<f4").tobytes()).decode()})
    with open(OUT, "w") as f:
        json.dump(out, f, indent=0)
    print("wrote", len(out["formats"]), "formats to", OUT)


if __name__ == "__main__":
    main()
