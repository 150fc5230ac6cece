import Foundation
import MoECore

/// Plain text files as a training corpus: training windows of `length + 1` tokens are drawn at
/// seeded random offsets, so the same seed gives the same batches. With the byte tokenizer each
/// file is memory-mapped and read in place (never whole into memory); with a checkpoint's
/// tokenizer each file is tokenized once, up to `maxTokenizedBytes` of text in all.
public final class TextCorpus: @unchecked Sendable {
    public let paths: [String]
    let files: [MappedFile]
    let total: Int
    /// Each file's token ids (a checkpoint's tokenizer), or nil (bytes, read in place).
    let tokens: [[Int]]?
    let eos: Int

    /// Text a checkpoint's tokenizer reads into memory at most: 1 GiB.
    public static let maxTokenizedBytes = 1 << 30

    /// Maps `paths` (and tokenizes them with `tokenizer`, unless it is the byte tokenizer);
    /// throws `MoECoreError.io` naming a file that cannot be read, and refuses a corpus with no
    /// text or, to tokenize, more than `maxTokenizedBytes`.
    public init(paths: [String], tokenizer: (any TrainingTokenizer)? = nil) throws {
        self.paths = paths
        files = try paths.map { p throws -> MappedFile in try MappedFile(path: p) }
        total = files.reduce(0) { $0 + $1.byteCount }
        guard total > 0 else { throw MoECoreError.invalidValue(path: paths.first, field: "corpus", reason: "no text in the corpus files") }
        if let tokenizer, !(tokenizer is ByteTokenizer) {
            guard total <= Self.maxTokenizedBytes else {
                throw MoECoreError.invalidValue(path: paths.first, field: "text_files",
                                                reason: "\(total) bytes of text; a checkpoint's tokenizer reads at most \(Self.maxTokenizedBytes)")
            }
            tokens = files.map { f in
                tokenizer.encode(String(decoding: UnsafeRawBufferPointer(start: f.base, count: f.byteCount), as: UTF8.self))
            }
            eos = tokenizer.eosID ?? 0
            guard (tokens ?? []).contains(where: { !$0.isEmpty }) else {
                throw MoECoreError.invalidValue(path: paths.first, field: "corpus", reason: "no tokens in the corpus files")
            }
        } else {
            tokens = nil
            eos = ByteTokenizer.eos
        }
    }

    /// Bytes in all files.
    public var byteCount: Int { total }

    /// `batch` windows of `length + 1` byte ids (inputs are the first `length`, targets the last
    /// `length`), from files chosen by size, at offsets from `rng`. Files shorter than a window
    /// are padded with `<eos>`.
    public func batch(_ batch: Int, length: Int, rng: inout SplitMix64) -> (inputs: [[Int]], targets: [[Int]]) {
        if let tokens { return tokenBatch(tokens, batch, length: length, rng: &rng) }
        var inputs: [[Int]] = [], targets: [[Int]] = []
        for _ in 0..<batch {
            var pick = Int(rng.next() % UInt64(total)), f = 0
            while pick >= files[f].byteCount { pick -= files[f].byteCount; f += 1 }
            let file = files[f]
            let start = file.byteCount > length + 1 ? Int(rng.next() % UInt64(file.byteCount - length - 1)) : 0
            var window = (0..<(length + 1)).map { i -> Int in
                start + i < file.byteCount ? Int(file.base.load(fromByteOffset: start + i, as: UInt8.self)) : ByteTokenizer.eos
            }
            if window.isEmpty { window = [ByteTokenizer.eos] }
            inputs.append(Array(window.dropLast()))
            targets.append(Array(window.dropFirst()))
        }
        return (inputs, targets)
    }

    /// `batch` from token ids: files chosen by token count, windows padded with `<eos>`.
    func tokenBatch(_ tokens: [[Int]], _ batch: Int, length: Int, rng: inout SplitMix64) -> (inputs: [[Int]], targets: [[Int]]) {
        let counts = tokens.map(\.count), all = counts.reduce(0, +)
        var inputs: [[Int]] = [], targets: [[Int]] = []
        for _ in 0..<batch {
            var pick = Int(rng.next() % UInt64(all)), f = 0
            while pick >= counts[f] { pick -= counts[f]; f += 1 }
            let ids = tokens[f]
            let start = ids.count > length + 1 ? Int(rng.next() % UInt64(ids.count - length - 1)) : 0
            let window = (0..<(length + 1)).map { start + $0 < ids.count ? ids[start + $0] : eos }
            inputs.append(Array(window.dropLast()))
            targets.append(Array(window.dropFirst()))
        }
        return (inputs, targets)
    }
}
