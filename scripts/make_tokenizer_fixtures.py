#!/usr/bin/env python3
"""Trains the two tokenizer.json families in use with the tokenizers library and records what
it gives for a list of hard strings; swift test checks MoEKit's tokenizer against them.

- bytelevel/: byte-level BPE as Qwen2 ships it (NFC, the Qwen split regex, ByteLevel), with
  special tokens <|endoftext|>, <|im_start|>, <|im_end|>.
- sentencepiece/: SentencePiece-style BPE as Mixtral and Llama ship it (prepend and replace
  with the metaspace, byte fallback with <0x00>..<0xFF> in the vocabulary, the Replace,
  ByteFallback, Fuse, Strip decoder, <s> added by the post-processor).

Each folder gets tokenizer.json and cases.json: for every string, the ids (with the special
tokens the post-processor adds) and the decoded text. Deterministic: the corpus is built here.

    python3 scripts/make_tokenizer_fixtures.py
"""
import json
import os

import tokenizers
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "Fixtures", "tokenizers")
QWEN_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Mixture-of-experts models route each token to a few experts; the router learns which.",
    "def add(a, b):\n    return a + b\n\nfor i in range(10):\n    print(i * i)\n",
    "{\"name\": \"moe\", \"experts\": 64, \"top_k\": 8, \"ratio\": 0.125}",
    "12345 67890 3.14159 2,718,281 0x1F 1e-9 100% $42",
    "I'm sure they'll say we've done what you'd expect, and it's fine.",
    "中文文本处理很重要。专家混合模型。数字和中文混合123。",
    "日本語のテキストとカタカナ。한국어 텍스트도 있습니다.",
    "Café, naïve, résumé, Ωmega, ∑ ∞ ≠ ≤ — “quotes” and ‘apostrophes’.",
    "emoji 😀 🎉 👍🏽 and families 👨‍👩‍👧 in text",
    "\t\tindented with tabs\n\n\nand blank lines\r\nwindows line ends",
    "ALL CAPS TEXT and MiXeD cAsE words",
] * 20

CASES = [
    "Hello, world!",
    "  leading spaces",
    "trailing spaces   ",
    "multiple     spaces    between",
    "tabs\tand\nnewlines\n\n\nend",
    "\r\nwindows\r\nlines",
    "数字123和中文混合",
    "日本語のテキスト",
    "한국어 텍스트",
    "emoji 😀🎉👍🏽 family 👨‍👩‍👧",
    "Café naïve résumé",
    "e\u0301 combining accent",
    "def f(x):\n    return x**2  # square\n",
    "{\"json\": [1, 2.5e-3, null]}",
    "12345678901234567890",
    "3.14159 and 2,718",
    "don't won't I'm we'll they've",
    "ALLCAPS and MiXeD",
    "Ωmega ∑ ∞ ≠ ≤",
    "zero\u200bwidth",
    "a",
    " ",
    "\n",
    "unseen characters ☃ ꙮ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
]


def bytelevel():
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=700, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return tok, CASES + ["<|im_start|>user\nhi<|im_end|>", "text<|endoftext|>more"]


def sentencepiece():
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False,
                                  limit_alphabet=200)
    tok.train_from_iterator(CORPUS, trainer)
    # Llama keeps the 256 byte tokens in the model's vocabulary: append them there.
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):
        name = "<0x%02X>" % b
        if name not in vocab:
            vocab[name] = len(vocab)
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
    }
    return Tokenizer.from_str(json.dumps(spec)), CASES + ["<s>already special</s>"]


def main():
    for name, make in (("bytelevel", bytelevel), ("sentencepiece", sentencepiece)):
        tok, cases = make()
        folder = os.path.join(OUT, name)
        os.makedirs(folder, exist_ok=True)
        tok.save(os.path.join(folder, "tokenizer.json"))
        records = []
        for text in cases:
            ids = tok.encode(text).ids
            records.append({"text": text, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False),
                            "decoded_skip_special": tok.decode(ids, skip_special_tokens=True)})
        with open(os.path.join(folder, "cases.json"), "w") as f:
            json.dump({"tokenizers": tokenizers.__version__, "cases": records}, f, ensure_ascii=False, indent=1)
        print(name, "vocab", tok.get_vocab_size(), "cases", len(records))


if __name__ == "__main__":
    main()
