import Foundation
import MoECore
import MoEModels

/// The next-token log-probabilities of a perplexity run, saved (`moe perplexity --save-logits`)
/// to compare another setting or quantization against (`--kl-base`), as llama-perplexity's
/// `--kl-divergence-base` does.
///
/// Layout, little-endian: the magic `MOEKLP01`; UInt64 vocabulary size; UInt64 token count and
/// the tokens as Int32; UInt64 row count; then per row an Int32 position (the token after which
/// the distribution is) and the vocabulary's log-probabilities as f16.
public enum LogProbFile {
    static let magic = Array("MOEKLP01".utf8)

    /// Writes rows as they come; `finish()` moves the file into place.
    public final class Writer {
        let path: String, temporary: String
        let handle: FileHandle
        let vocab: Int
        private(set) var rows = 0
        private var finished = false

        /// A writer dropped before `finish` (a failed run) leaves nothing behind.
        deinit {
            if !finished {
                try? handle.close()
                unlink(temporary)
            }
        }

        public init(path: String, vocab: Int, tokens: [Int]) throws(ModelError) {
            self.path = path
            self.vocab = vocab
            temporary = path + ".tmp-\(getpid())"
            guard FileManager.default.createFile(atPath: temporary, contents: nil), let h = FileHandle(forWritingAtPath: temporary) else {
                throw .io(path: path, reason: "cannot write: \(String(cString: strerror(errno)))")
            }
            handle = h
            var header = Data(Self.magicData)
            header.append(le(UInt64(vocab)))
            header.append(le(UInt64(tokens.count)))
            for t in tokens { header.append(le(Int32(truncatingIfNeeded: t))) }
            header.append(le(UInt64(0)))  // the row count, filled in by `finish`
            try write(header)
        }

        static var magicData: Data { Data(LogProbFile.magic) }

        /// Appends the distribution after `position`.
        public func append(position: Int, logProbs: UnsafeBufferPointer<Float>) throws(ModelError) {
            var row = le(Int32(position))
            let half = Tensor(shape: [vocab], values: Array(logProbs), dtype: .f16)
            row.append(Data(bytes: half.rawPointer, count: half.byteCount))
            try write(row)
            rows += 1
        }

        /// Fills in the row count and renames the file into place.
        public func finish(tokenCount: Int) throws(ModelError) {
            do {
                try handle.seek(toOffset: UInt64(8 + 8 + 8 + 4 * tokenCount))
                try handle.write(contentsOf: le(UInt64(rows)))
                try handle.synchronize()
                try handle.close()
                if rename(temporary, path) != 0 { throw ModelError.io(path: path, reason: "cannot rename into place: \(String(cString: strerror(errno)))") }
                finished = true
            } catch let error as ModelError {
                throw error
            } catch {
                try? FileManager.default.removeItem(atPath: temporary)
                throw .io(path: path, reason: "cannot write: \(systemReason(error))")
            }
        }

        private func write(_ data: Data) throws(ModelError) {
            do { try handle.write(contentsOf: data) } catch {
                try? FileManager.default.removeItem(atPath: temporary)
                throw .io(path: path, reason: "cannot write: \(systemReason(error))")
            }
        }
    }

    /// A saved run, mapped: its tokens and a row reader.
    public struct Reader {
        public let path: String
        public let vocab: Int
        public let tokens: [Int]
        public let rows: Int
        let file: MappedFile
        let rowsOffset: Int

        public init(path: String) throws(ModelError) {
            self.path = path
            do { file = try MappedFile(path: path) } catch { throw .io(path: path, reason: error.description) }
            let bytes = UnsafeRawBufferPointer(start: file.base, count: file.byteCount)
            func u64(_ at: Int, _ field: String) throws(ModelError) -> Int {
                guard at + 8 <= bytes.count else { throw .invalidFile(path: path, field: field, reason: "the file ends at byte \(bytes.count)") }
                let v = bytes.loadUnaligned(fromByteOffset: at, as: UInt64.self).littleEndian
                guard v <= 1 << 40 else { throw .invalidFile(path: path, field: field, reason: "\(v) is not a plausible count") }
                return Int(v)
            }
            guard bytes.count >= 8, Array(bytes[0..<8]) == LogProbFile.magic else {
                throw .invalidFile(path: path, field: "magic", reason: "not a MoEKit log-probability file (MOEKLP01)")
            }
            vocab = try u64(8, "vocabulary size")
            let count = try u64(16, "token count")
            guard 24 + 4 * count <= bytes.count else { throw .invalidFile(path: path, field: "tokens", reason: "\(count) tokens do not fit in the file") }
            tokens = (0..<count).map { Int(bytes.loadUnaligned(fromByteOffset: 24 + 4 * $0, as: Int32.self).littleEndian) }
            rows = try u64(24 + 4 * count, "row count")
            rowsOffset = 32 + 4 * count
            guard vocab >= 1, rowsOffset + rows * (4 + 2 * vocab) == bytes.count else {
                throw .invalidFile(path: path, field: "rows", reason: "\(rows) rows of \(vocab) values do not tile the file's \(bytes.count) bytes")
            }
        }

        /// Row `i`: its position and log-probabilities.
        public func row(_ i: Int) -> (position: Int, logProbs: [Float]) {
            let at = rowsOffset + i * (4 + 2 * vocab)
            let position = Int(UnsafeRawPointer(file.base + at).loadUnaligned(as: Int32.self).littleEndian)
            let storage = try? Tensor(mapping: file, byteOffset: at + 4, shape: [vocab], dtype: .f16)
            return (position, storage?.toFloats() ?? [])  // init checked that every row fits
        }
    }
}

private func le<T: FixedWidthInteger>(_ v: T) -> Data { withUnsafeBytes(of: v.littleEndian) { Data($0) } }

/// Mean KL(base || current) and top-1 agreement over next-token distributions, added one
/// position at a time (`moe perplexity --kl-base`, `moe prune --eval-file`).
public struct DistributionComparison: Sendable {
    public private(set) var positions = 0
    private var klSum = 0.0, agreeing = 0

    public init() {}

    /// Adds one position: the base run's log-probabilities and this run's.
    public mutating func add(base: [Float], current: UnsafeBufferPointer<Float>) {
        var sum = 0.0, bestBase = 0, best = 0
        for i in 0..<min(base.count, current.count) {
            sum += Foundation.exp(Double(base[i])) * Double(base[i] - current[i])
            if base[i] > base[bestBase] { bestBase = i }
            if current[i] > current[best] { best = i }
        }
        klSum += max(0, sum)  // rounding of the saved f16 values can make a near-zero sum negative
        if best == bestBase { agreeing += 1 }
        positions += 1
    }

    public var meanKL: Double { positions == 0 ? 0 : klSum / Double(positions) }
    public var top1Agreement: Double { positions == 0 ? 0 : Double(agreeing) / Double(positions) }
}
