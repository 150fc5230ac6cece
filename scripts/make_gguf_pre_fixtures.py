#!/usr/bin/env python3
"""Makes Tests/Fixtures/gguf_vocab/pre-tokenizers.json: for the GGUF pre-tokenizer names that
llama.cpp ships no vocabulary test for and that published MoE GGUFs carry ("gpt-4o": GPT-OSS;
"glm4": GLM-4.5; "tekken": Mistral's newer models), the ids the Hugging Face `tokenizers` library gives for llama.cpp's test texts
(ggml-vocab-gpt-2.gguf.inp) with GPT-2's vocabulary and merges (read from ggml-vocab-gpt-2.gguf
by the `gguf` package) under that pre-tokenizer's split: GPT-4o's o200k pattern as its
tokenizer.json has it, and GLM-4's (Llama 3's pattern, with whole vocabulary words taken before
any merge, as llama.cpp's `ignore_merges`); Tekken's as Mistral's tokenizer.json has it, whole
words first too. Also each text's pieces under the split alone (`Split`,
isolated), which tell the two patterns apart where GPT-2's merges do not. `GGUFPreTokenizerTests`
renames the vocabulary file's `tokenizer.ggml.pre` and compares both.

    pip install tokenizers gguf && python3 scripts/make_gguf_pre_fixtures.py
"""
import json
import os

import gguf
from tokenizers import Regex, Tokenizer, models, pre_tokenizers

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB = os.path.join(HERE, "..", "Tests", "Fixtures", "gguf_vocab")
PATTERNS = {
    "gpt-4o": r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
              r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
              r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "glm4": r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
            r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "tekken": r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
              r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
              r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}
IGNORE_MERGES = {"glm4", "tekken"}


def field(reader, key):
    f = reader.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def main():
    reader = gguf.GGUFReader(os.path.join(VOCAB, "ggml-vocab-gpt-2.gguf"))
    tokens = field(reader, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    texts = open(os.path.join(VOCAB, "ggml-vocab-gpt-2.gguf.inp"), encoding="utf-8").read().split("\n__ggml_vocab_test__\n")
    # Where the two splits part: letter case changes inside a word, contractions after capitals,
    # punctuation runs ending in a slash, long digit runs, accented capitals.
    texts += ["HelloWorld camelCaseWords XMLHttpRequest", "I'VE DON'T You'RE they'll", "path/to/file/ x//y\n",
              "1234567 89", "ÀÉÎõü ÜberStraße ΑθήναΣ", "tabs\tand  spaces   end "]
    out = {"texts": texts, "ids": {}, "pieces": {}}
    for name, pattern in PATTERNS.items():
        split = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
        out["pieces"][name] = [[piece for piece, _ in split.pre_tokenize_str(t)] for t in texts]
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=name in IGNORE_MERGES))
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        out["ids"][name] = [tok.encode(t, add_special_tokens=False).ids for t in texts]
    with open(os.path.join(VOCAB, "pre-tokenizers.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)
    print({k: sum(map(len, v)) for k, v in out["ids"].items()}, "ids over", len(texts), "texts")


if __name__ == "__main__":
    main()
