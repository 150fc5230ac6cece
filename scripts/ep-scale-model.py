#!/usr/bin/env python3
"""Expert-parallel training on N machines like this one, on a 100 Gb/s network: a model built
from figures measured here (README, "Expert parallelism under MPI"), printed as a Markdown table.

    scripts/ep-scale-model.py [TOKENS_PER_S] [TOKENS_PER_STEP_PER_MACHINE]

TOKENS_PER_S (default 4244, the measured one-process rate of the 4-layer test model on this
2-core machine) gives the machine's sustained training FLOP/s as 6 x active parameters x rate.
Per token, each MoE layer moves (P-1)/P x k x (4d + 2) x 4 bytes per machine (RowExchange's six
f32 payloads, as MoEKit sends them); the non-expert gradients are all-reduced once a step
(ring: 2 (P-1)/P x 4 bytes each), spread over the step's tokens. A machine's time per token is
compute + communication (no overlap) or the larger of the two (perfect overlap, FSMoE's bound).
Memory per machine assumes each rank allocates only its experts (not yet so in MoEKit): weights,
gradient and AdamW's two moments, f32, 16 bytes a parameter.
"""
import sys

BANDWIDTH = 100e9 / 8          # bytes/s per machine
MEMORY = 24 * 2**30            # bytes per machine


def attention_mha(d, heads, kv, hd):
    return d * heads * hd * 2 + d * kv * hd * 2


def shapes():
    # The measured test model: hidden 256, 4 layers, 4 heads (2 KV), 8 experts of 512, top-2, byte vocabulary.
    test = dict(d=256, layers=4, moe_layers=4, experts=8, inter=512, k=2, shared=0, dense_inter=0,
                attention=attention_mha(256, 4, 2, 64), vocab=260, tied=True)
    olmoe = dict(d=2048, layers=16, moe_layers=16, experts=64, inter=1024, k=8, shared=0, dense_inter=0,
                 attention=attention_mha(2048, 16, 16, 128), vocab=50304, tied=False)
    # DeepSeek-V3: MLA (q_lora 1536, kv_lora 512, 128 heads, nope 128 + rope 64, v 128), 3 dense layers.
    d, h = 7168, 128
    mla = d * 1536 + 1536 * h * 192 + d * (512 + 64) + 512 * h * (128 + 128) + h * 128 * d
    deepseek = dict(d=d, layers=61, moe_layers=58, experts=256, inter=2048, k=8, shared=1, dense_inter=18432,
                    attention=mla, vocab=129280, tied=False)
    return test, {"OLMoE-1B-7B": olmoe, "DeepSeek-V3": deepseek}


def params(m):
    expert = 3 * m["d"] * m["inter"]
    experts_total = m["moe_layers"] * m["experts"] * expert
    dense = (m["layers"] - m["moe_layers"]) * 3 * m["d"] * m["dense_inter"]
    shared = m["moe_layers"] * m["shared"] * expert
    router = m["moe_layers"] * m["experts"] * m["d"]
    embed = m["vocab"] * m["d"] * (1 if m["tied"] else 2)
    non_expert = m["layers"] * m["attention"] + dense + shared + router + embed
    active = non_expert + m["moe_layers"] * m["k"] * expert
    return active, non_expert, experts_total


def main():
    rate = float(sys.argv[1]) if len(sys.argv) > 1 else 4244.0
    step_tokens = float(sys.argv[2]) if len(sys.argv) > 2 else 4096.0
    test, models = shapes()
    flops = 6 * params(test)[0] * rate
    print(f"machine: {flops / 1e9:.0f} GFLOP/s sustained in training (6 x {params(test)[0] / 1e6:.2f} M active x {rate:.0f} tok/s); "
          f"network {BANDWIDTH * 8 / 1e9:.0f} Gb/s; {step_tokens:.0f} tokens per machine per step\n")
    print("| model | machines | compute s/token/machine | all-to-all s/token/machine | all-reduce s/token/machine "
          "| tokens/s, no overlap | tokens/s, full overlap | communication share | memory per machine |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, m in models.items():
        active, non_expert, experts = params(m)
        for p in (8, 64, 512):
            compute = 6 * active / flops
            a2a = m["moe_layers"] * (p - 1) / p * m["k"] * (4 * m["d"] + 2) * 4 / BANDWIDTH
            allreduce = 2 * (p - 1) / p * non_expert * 4 / BANDWIDTH / step_tokens
            comm = a2a + allreduce
            no_overlap = p / (compute + comm)
            overlap = p / max(compute, comm)
            memory = (non_expert + experts / p) * 16
            fits = "fits" if memory <= MEMORY else "does not fit"
            print(f"| {name} ({active / 1e9:.1f} B active, {(non_expert + experts) / 1e9:.0f} B total) | {p} | {compute:.3g} | {a2a:.2g} "
                  f"| {allreduce:.2g} | {no_overlap:.3g} | {overlap:.3g} | {comm / (compute + comm):.1%} | {memory / 2**30:.0f} GiB ({fits}) |")


if __name__ == "__main__":
    main()
