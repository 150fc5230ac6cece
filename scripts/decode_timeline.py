"""Where a decoded token's time goes on the calling thread, step by step (scripts/decode-timeline.sh).

    python3 decode_timeline.py patch DIR     # stamps the calling thread's clock at each step of a copy of the sources
    python3 decode_timeline.py report FILE   # the stamps `moe bench` wrote, per token: each step's time and each pass's

`patch` inserts `TMark.hit(id)` before or after one line of each step (MARKS below: each anchor
must match exactly one line of its file, by its start, or the patch stops and says which) and
writes the recorder `TMark` into MoECore. `report` drops the first quarter of the tokens (the
bench's warm-up) and gives, per token, the time between consecutive marks on the calling thread
("serial", the other threads waiting) and the time in the pool's parallel loops ("loops"), each
named by the mark before it.
"""
import collections
import os
import sys

# (file under Sources, id, "before" or "after", the start of the anchor line, the step's name)
MARKS = [
    ("MoECore/ThreadPool.swift", 90, "before", "withoutActuallyEscaping(body) { escapable in", "a parallel loop"),
    ("MoECore/ThreadPool.swift", 91, "before", "parallelNanoseconds.add(", "its end"),
    ("MoEModels/DecoderModel.swift", 3, "before", "precondition(batch.count == caches.count", "forward(batch:)"),
    ("MoEModels/DecoderModel.swift", 4, "before", "let segments = Segments(ranges)", "caches reserved"),
    ("MoEModels/DecoderModel.swift", 5, "after", "let segments = Segments(ranges)", "segments made"),
    ("MoEModels/DecoderModel.swift", 6, "before", "// Non-finite values are caught where they first appear", "embedding read"),
    ("MoEModels/DecoderModel.swift", 2, "after", "var state = RouterState()", "layers begin"),
    ("MoEModels/DecoderModel.swift", 10, "after", "let h = Kernels.rmsNorm(x, weight: layer.inputNorm", "input norm"),
    ("MoEModels/DecoderModel.swift", 11, "after", "let a = layer.attention.forward(", "attention"),
    ("MoEModels/DecoderModel.swift", 13, "after", "let h2 = Kernels.rmsNorm(x, weight: layer.postNorm", "residual, post norm"),
    ("MoEModels/DecoderModel.swift", 14, "before", "let out = moe.forward(h2,", "MoE options"),
    ("MoEModels/DecoderModel.swift", 15, "after", "let out = moe.forward(h2,", "MoE step"),
    ("MoEModels/DecoderModel.swift", 16, "before", "add(f, into: x)", "after the MoE step"),
    ("MoEModels/DecoderModel.swift", 17, "after", "add(f, into: x)", "residual"),
    ("MoEModels/DecoderModel.swift", 20, "before", "let normed = Kernels.rmsNorm(x, weight: finalNorm", "last layer's checks"),
    ("MoEModels/DecoderModel.swift", 21, "after", "let normed = Kernels.rmsNorm(x, weight: finalNorm", "final norm"),
    ("MoEModels/Attention.swift", 72, "before", "if token {\n            withExtendedLifetime((x, q, k, v))", "attention's buffers"),
    ("MoEModels/Attention.swift", 30, "before", "if let bq { addRowBias(q, bq) }", "QKV products"),
    ("MoEModels/Attention.swift", 31, "before", "let angles = segments.angles(rope, caches: caches)", "biases, q/k norms"),
    ("MoEModels/Attention.swift", 32, "before", "let keys = k.reshaped([t, g, dh])", "RoPE"),
    ("MoEModels/Attention.swift", 33, "before", "let out = causalAttention(", "KV store"),
    ("MoEModels/Attention.swift", 34, "before", "let y: Tensor", "attention over the cache"),
    ("MoEModels/Attention.swift", 35, "before", "if let bo { addRowBias(y, bo) }", "output product"),
    ("MoE/MoELayer.swift", 39, "before", "let logits = gate.logits(input, state: &state, pool: pool)", "MoE entry"),
    ("MoE/MoELayer.swift", 40, "after", "let logits = gate.logits(input, state: &state, pool: pool)", "gate logits"),
    ("MoE/MoELayer.swift", 41, "after", "let routing = options.rowRouters.isEmpty", "routing"),
    ("MoE/MoELayer.swift", 43, "before", "shared?.add(input, into: out, pool: pool)", "experts"),
    ("MoE/SwiGLUExperts+Token.swift", 70, "before", "if order.isEmpty { return true }", "out buffer, choices sorted"),
    ("MoE/SwiGLUExperts+Token.swift", 71, "before", "withExtendedLifetime((x, out, self)) {", "records checked"),
    ("MoECore/Kernels+SwiGLURow.swift", 60, "before", "let (g, gCapacity) = ScratchBuffers.take", "swiGLURow entry"),
    ("MoECore/Kernels+SwiGLURow.swift", 61, "before", "var inputs = QuantizedInputs()", "scratch taken"),
    ("MoECore/Kernels+SwiGLURow.swift", 62, "before", "// Each FFN's down input, quantized", "x quantized, gate/up jobs"),
    ("MoECore/Kernels+SwiGLURow.swift", 63, "before", "let left = UnsafeMutablePointer", "down inputs' room"),
    ("MoECore/Kernels+SwiGLURow.swift", 65, "before", "let pairShapes =", "row counters"),
    ("MoECore/Kernels+SwiGLURow.swift", 66, "before", "var down: [QuantizedJob] = []", "gate/up pass"),
    ("MoECore/Kernels+SwiGLURow.swift", 67, "before", "streamQuantizedJobs(down, pool: pool)", "down jobs"),
    ("MoECore/Kernels+SwiGLURow.swift", 68, "before", "addWeightedRows(yp, weights: weights, width: d, into: out)", "down pass"),
    ("MoECore/Kernels+SwiGLURow.swift", 69, "after", "addWeightedRows(yp, weights: weights, width: d, into: out)", "combine"),
]

RECORDER = """import Foundation

/// Decode timeline stamps (scripts/decode_timeline.py): id and clock at each mark while `on`.
public enum TMark {
    static let cap = 1 << 22
    nonisolated(unsafe) static let ids = UnsafeMutablePointer<Int32>.allocate(capacity: cap)
    nonisolated(unsafe) static let ts = UnsafeMutablePointer<UInt64>.allocate(capacity: cap)
    nonisolated(unsafe) static var n = 0
    nonisolated(unsafe) public static var on = false
    public static let registered: Bool = { atexit { TMark.dump() }; return true }()
    @inline(__always) public static func hit(_ id: Int32) {
        guard on, n < cap else { return }
        ids[n] = id; ts[n] = DispatchTime.now().uptimeNanoseconds; n += 1
    }
    static func dump() {
        var out = ""
        out.reserveCapacity(n * 20)
        for i in 0..<n { out += "\\(ids[i]) \\(ts[i])\\n" }
        let path = ProcessInfo.processInfo.environment["MOEKIT_TIMELINE"] ?? "/tmp/moekit-timeline.txt"
        FileManager.default.createFile(atPath: path, contents: out.data(using: .utf8))
    }
}
"""

# The bench's decode loop: a token starts after its id is chosen (0) and ends with its logits (1).
BENCH = ("MoEGenerate/ModelBenchmark.swift",
         "                logits = try model.forward([nextToken(logits)], cache: &cache, lastOnly: true, options: options)\n",
         "                let next = nextToken(logits)\n"
         "                _ = TMark.registered; TMark.on = true; TMark.hit(0)\n"
         "                logits = try model.forward([next], cache: &cache, lastOnly: true, options: options)\n"
         "                TMark.hit(1); TMark.on = false\n")


def patch(root):
    src = os.path.join(root, "Sources")
    with open(os.path.join(src, "MoECore", "TMark.swift"), "w") as f:
        f.write(RECORDER)
    path, old, new = BENCH
    text = open(os.path.join(src, path)).read()
    if text.count(old) != 1:
        sys.exit(f"decode_timeline: the bench's decode line is not once in {path}")
    open(os.path.join(src, path), "w").write(text.replace(old, new))
    for path, mark, where, anchor, _ in MARKS:
        full = os.path.join(src, path)
        text = open(full).read()
        lines = text.splitlines(keepends=True)
        first, _, rest = anchor.partition("\n")
        hits = [i for i, line in enumerate(lines)
                if line.lstrip().startswith(first) and (not rest or "".join(lines[i + 1:i + 2]).lstrip().startswith(rest.strip()))]
        if len(hits) != 1:
            sys.exit(f"decode_timeline: mark {mark}: {len(hits)} lines of {path} start with {first!r}")
        i = hits[0]
        indent = lines[i][:len(lines[i]) - len(lines[i].lstrip())]
        stamp = f"{indent}TMark.hit({mark})\n"
        lines.insert(i if where == "before" else i + 1, stamp)
        open(full, "w").write("".join(lines))


def report(path):
    names = {mark: name for _, mark, _, _, name in MARKS}
    names.update({0: "token start", 1: "token end"})
    tokens, current = [], None
    for line in open(path):
        mark, t = map(int, line.split())
        if mark == 0:
            current = [(0, t)]
            tokens.append(current)
        elif current is not None:
            current.append((mark, t))
    tokens = [tok for tok in tokens if tok[-1][0] == 1]
    tokens = tokens[len(tokens) // 4:]
    if not tokens:
        sys.exit(f"decode_timeline: no whole token in {path}")
    serial, loops, total = collections.defaultdict(float), collections.defaultdict(float), 0
    for tok in tokens:
        total += tok[-1][1] - tok[0][1]
        prev, loop_start = tok[0], None
        for mark, t in tok[1:]:
            if mark == 90:
                serial[(prev[0], "loop")] += t - prev[1]
                loop_start = t
            elif mark == 91:
                loops[prev[0]] += t - loop_start
                prev = (prev[0], t)
            else:
                serial[(prev[0], mark)] += t - prev[1]
                prev = (mark, t)
    n = len(tokens)
    us = lambda ns: ns / n / 1e3
    print(f"{n} tokens, {us(total):.1f} us a token: serial {us(sum(serial.values())):.1f}, loops {us(sum(loops.values())):.1f}")
    print("serial (the calling thread alone), us a token, from a mark to the next (a mark is named by the step that ends at it):")
    for (a, b), v in sorted(serial.items(), key=lambda kv: -kv[1]):
        end = "the loop it starts" if b == "loop" else f"{b} {names.get(b, '?')}"
        print(f"  {us(v):7.1f}  {a:>3} {names.get(a, '?'):<28} -> {end}")
    print("parallel loops, us a token, by the mark before them:")
    for a, v in sorted(loops.items(), key=lambda kv: -kv[1]):
        print(f"  {us(v):7.1f}  {a:>3} {names.get(a, '?')}")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("patch", "report"):
        sys.exit(__doc__)
    (patch if sys.argv[1] == "patch" else report)(sys.argv[2])
