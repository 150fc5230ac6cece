#!/usr/bin/env python3
"""`moe quantize --model DIR --type f32` against llama.cpp's convert_hf_to_gguf.py on the same
checkpoint folder: every tensor (name, shape, values) and every metadata value the two share
must be equal; keys only one writes are listed (general.* naming, the tokenizer's extras).

    swift build -c release && scripts/build-llama-cpp.sh && \
        python3 scripts/compare-conversion.py [LLAMA_DIR] [FAMILY ...]   # default: deepseek_v2 deepseek_v3 glm4_moe gpt_oss

FAMILY is a folder of Tests/Fixtures; a byte-level tokenizer.json (256 tokens) is added to a
copy of it, as scripts/make_gguf_model_fixtures.py does.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
LLAMA = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, ".llama.cpp"))
FAMILIES = sys.argv[2:] or ["deepseek_v2", "deepseek_v3", "glm4_moe", "gpt_oss"]
# The GPT-OSS fixture clamps SwiGLU at 1; llama.cpp fixes 7 (MoEKit refuses to convert any other), so
# the copy takes the default.
CONFIG_EDITS = {"gpt_oss": {"swiglu_limit": None}}
# Differences by design: llama.cpp's converter counts the multi-token-prediction layers a GLM
# config declares in the block count even when the checkpoint holds none of their tensors;
# MoEKit writes the decoder's layers and nextn_predict_layers 0.
EXPECTED = {"glm4_moe": {"glm4moe.block_count", "glm4moe.nextn_predict_layers"}}
sys.argv = sys.argv[:1] + [LLAMA]  # make_gguf_model_fixtures reads the llama.cpp folder from argv
sys.path.insert(0, HERE)
from make_gguf_model_fixtures import CONVERT, tokenizer_json  # noqa: E402

sys.path.insert(0, os.path.join(LLAMA, "src", "gguf-py"))
import gguf  # noqa: E402


def load(path):
    r = gguf.GGUFReader(path)
    keys = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    return keys, {t.name: np.asarray(t.data) for t in r.tensors}


failed = False
with tempfile.TemporaryDirectory() as scratch:
    for family in FAMILIES:
        folder = os.path.join(scratch, family)
        shutil.copytree(os.path.join(ROOT, "Tests", "Fixtures", family), folder)
        tok = tokenizer_json()
        tok["added_tokens"] = []  # the fixtures' vocabularies hold 256 tokens
        json.dump(tok, open(os.path.join(folder, "tokenizer.json"), "w"))
        config = json.load(open(os.path.join(folder, "config.json")))
        for key, value in CONFIG_EDITS.get(family, {}).items():
            config.pop(key, None) if value is None else config.__setitem__(key, value)
        json.dump(config, open(os.path.join(folder, "config.json"), "w"))
        theirs, ours = os.path.join(scratch, f"{family}.llama.gguf"), os.path.join(scratch, f"{family}.moe.gguf")
        subprocess.run([sys.executable, "-c", CONVERT, folder, "--outfile", theirs, "--outtype", "f32"], check=True, capture_output=True)
        subprocess.run([os.path.join(ROOT, ".build", "release", "moe"), "quantize", "--model", folder, "--type", "f32", "--out", ours],
                       check=True, capture_output=True)
        (ka, ta), (kb, tb) = load(theirs), load(ours)
        bad = [n for n in sorted(set(ta) | set(tb)) if n not in ta or n not in tb or ta[n].shape != tb[n].shape
               or not np.array_equal(ta[n], tb[n])]
        differ = [k for k in sorted(set(ka) & set(kb)) if ka[k] != kb[k] and k != "general.name"]
        expected = [f"{k} ({ka[k]} vs {kb[k]}, by design)" for k in differ if k in EXPECTED.get(family, set())]
        differ = [k for k in differ if k not in EXPECTED.get(family, set())]
        print(f"{family}: {len(ta)} tensors, {len(bad)} differ {bad[:6]}; {len(set(ka) & set(kb))} shared keys, "
              f"{len(differ)} differ {differ}{'; ' + ', '.join(expected) if expected else ''}; only llama.cpp's: {sorted(set(ka) - set(kb))}; only MoEKit's: {sorted(set(kb) - set(ka))}")
        failed |= bool(bad or differ)
sys.exit(1 if failed else 0)
