import Foundation
import MoECore

/// Plain text files as a training corpus: each file is memory-mapped (never read whole into
/// memory), and training windows of `length + 1` bytes are drawn at seeded random offsets, so
/// the same seed gives the same batches.
public final class TextCorpus: @unchecked Sendable {
    public let paths: [String]
    let files: [MappedFile]
    let total: Int

    /// Maps `paths`; throws `MoECoreError.io` naming a file that cannot be read, and refuses a
    /// corpus with no bytes.
    public init(paths: [String]) throws {
        self.paths = paths
        files = try paths.map { p throws -> MappedFile in try MappedFile(path: p) }
        total = files.reduce(0) { $0 + $1.byteCount }
        guard total > 0 else { throw MoECoreError.invalidValue(path: paths.first, field: "corpus", reason: "no text in the corpus files") }
    }

    /// Bytes in all files.
    public var byteCount: Int { total }

    /// `batch` windows of `length + 1` byte ids (inputs are the first `length`, targets the last
    /// `length`), from files chosen by size, at offsets from `rng`. Files shorter than a window
    /// are padded with `<eos>`.
    public func batch(_ batch: Int, length: Int, rng: inout SplitMix64) -> (inputs: [[Int]], targets: [[Int]]) {
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
}
