import MoECore

/// QMoE's dictionary coding of ternary rows: each row is read as pairs of ternary weights (9
/// symbols), and a dictionary of up to 65536 codewords, the most useful runs of 1 to 28 pairs
/// in the model (any past the 14th all zero pairs), turns it into a stream of 16-bit codes by
/// greedy longest match. The 9 single
/// pairs are always in it, so every row is encodable. `dictionary(rows:weights:)` sizes the
/// dictionary for the model: the size (a power of two) that makes codes plus entries smallest.
public enum TernaryCodebook {
    /// The longest run, in pairs.
    public static let maxPairs = TernaryDictionary.maxRun / 2
    /// The pairs at a run's start that may be non-zero; past them a run is zero pairs.
    static let maskedPairs = TernaryDictionary.maskedRun / 2
    /// The symbol of the pair (0, 0).
    static let zeroPair: UInt8 = 4

    /// The run of n pairs at `symbols` as a key: symbol i (0...8) of the first 14 in bits
    /// 4i ..< 4i + 4, the length n in bits 56-60 (the pairs past 14 are zero pairs, so they add
    /// nothing to tell runs apart).
    @inline(__always) static func key(_ symbols: UnsafePointer<UInt8>, _ n: Int) -> UInt64 {
        var k: UInt64 = 0
        for i in 0..<min(n, maskedPairs) { k |= UInt64(symbols[i]) << UInt64(4 * i) }
        return k | UInt64(n) << 56
    }

    /// For each pair position, how many zero pairs start there.
    static func zeroRuns(_ symbols: [UInt8]) -> [Int] {
        var runs = [Int](repeating: 0, count: symbols.count + 1)
        for i in stride(from: symbols.count - 1, through: 0, by: -1) where symbols[i] == zeroPair { runs[i] = runs[i + 1] + 1 }
        return runs
    }

    /// The longest run a code may take at pair `start` of a row of `count` pairs: up to 14
    /// pairs, then as far as the zero pairs from the 15th go, at most 28 pairs.
    @inline(__always) static func longestRun(at start: Int, count: Int, zeroRuns: [Int]) -> Int {
        let n = min(maskedPairs, count - start)
        return n < maskedPairs ? n : min(maxPairs, n + zeroRuns[start + n])
    }

    /// A row's ternary values (K even) as pair symbols 3 (a + 1) + (b + 1).
    static func symbols(_ row: ArraySlice<Int8>) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: row.count / 2)
        var i = row.startIndex
        for p in 0..<out.count {
            out[p] = UInt8(3 * (Int(row[i]) + 1) + Int(row[i + 1]) + 1)
            i += 2
        }
        return out
    }

    /// The entry of a run key.
    static func entry(_ key: UInt64) -> UInt64 {
        let n = Int(key >> 56)
        var run: [Int8] = []
        for i in 0..<n {
            let s = i < maskedPairs ? Int((key >> UInt64(4 * i)) & 15) : Int(zeroPair)
            run.append(Int8(s / 3 - 1))
            run.append(Int8(s % 3 - 1))
        }
        return TernaryDictionary.entry(run[...])
    }

    /// A dictionary of `size` entries (9...65536) for `rows` (each a row's ternary values, K
    /// even): every run of 1 to 14 pairs at every pair position of the rows is counted, and the
    /// `size` with the most pairs covered (count times length) are kept, the 9 single pairs
    /// always. A dictionary with fewer distinct runs than `size` is shorter.
    public static func dictionary(rows: [ArraySlice<Int8>], size: Int = TernaryDictionary.maxSize) throws(MoECoreError) -> TernaryDictionary {
        guard (9...TernaryDictionary.maxSize).contains(size) else {
            throw .invalidValue(path: nil, field: "dictionary size", reason: "\(size) is not in 9...\(TernaryDictionary.maxSize)")
        }
        return try TernaryDictionary(entries: ranked(rows).prefix(size).map(entry))
    }

    /// The dictionary for a model of `weights` expert weights, `rows` a sample of its rows: of
    /// the sizes 512, 1024, ..., 65536, the one whose codes (16 bits each, the sample's rate
    /// scaled to `weights`) and entries (64 bits each) take the fewest bits together.
    public static func dictionary(rows: [ArraySlice<Int8>], weights: Int) throws(MoECoreError) -> TernaryDictionary {
        let keys = ranked(rows)
        let sampled = rows.reduce(0) { $0 + $1.count }
        var best: (bits: Double, dictionary: TernaryDictionary)? = nil
        for shift in 9...16 {
            let d = try TernaryDictionary(entries: keys.prefix(1 << shift).map(entry))
            let encoder = try Encoder(d)
            var codes = 0
            for row in rows { codes += encoder.codeCount(row) }
            let bits = Double(codes) * 16 * Double(weights) / Double(max(1, sampled)) + Double(d.entries.count) * 64
            if bits < (best?.bits ?? .infinity) { best = (bits, d) }
            if d.entries.count < 1 << shift { break }  // every distinct run is in: larger sizes are the same
        }
        return best!.dictionary  // safe: the loop ran at least once
    }

    /// Every distinct run of 2 to 28 pairs in `rows` (zero pairs past the 14th), most pairs
    /// covered first, after the 9 single pairs.
    static func ranked(_ rows: [ArraySlice<Int8>]) -> [UInt64] {
        var counts: [UInt64: Int] = [:]
        for row in rows {
            let s = symbols(row), zeros = zeroRuns(s)
            s.withUnsafeBufferPointer { p in
                for start in 0..<p.count {
                    let longest = longestRun(at: start, count: p.count, zeroRuns: zeros)
                    for n in stride(from: 2, through: longest, by: 1) {
                        counts[key(p.baseAddress! + start, n), default: 0] += 1
                    }
                }
            }
        }
        let singles = (0..<9).map { UInt64($0) | 1 << 56 }
        let ranked = counts.sorted { a, b in
            let sa = a.value * Int(a.key >> 56), sb = b.value * Int(b.key >> 56)
            return sa != sb ? sa > sb : a.key < b.key
        }
        return singles + ranked.prefix(TernaryDictionary.maxSize - singles.count).map(\.key)
    }

    /// Encodes ternary rows ([rows, cols] row-major, cols even) with `dictionary` by greedy
    /// longest match within each row: the codes and each row's first code (rows + 1 offsets).
    /// A dictionary without the 9 single pairs cannot encode every row: an error.
    public static func encode(_ values: [Int8], rows: Int, cols: Int,
                              dictionary: TernaryDictionary) throws(MoECoreError) -> (codes: [UInt16], offsets: [UInt32]) {
        try Encoder(dictionary).encode(values, rows: rows, cols: cols)
    }

    /// Greedy longest-match encoding against one dictionary, its run index built once.
    public struct Encoder: Sendable {
        let index: [UInt64: UInt16]

        /// Indexes `dictionary`'s runs (the first code of a run that appears twice wins).
        public init(_ dictionary: TernaryDictionary) throws(MoECoreError) {
            var index: [UInt64: UInt16] = [:]
            index.reserveCapacity(dictionary.entries.count)
            for (code, e) in dictionary.entries.enumerated() {
                let (pos, neg, len) = TernaryDictionary.fields(e)
                var k = UInt64(len / 2) << 56
                for p in 0..<min(len / 2, maskedPairs) {
                    let a = Int((pos >> (2 * p)) & 1) - Int((neg >> (2 * p)) & 1)
                    let b = Int((pos >> (2 * p + 1)) & 1) - Int((neg >> (2 * p + 1)) & 1)
                    k |= UInt64(3 * (a + 1) + b + 1) << UInt64(4 * p)
                }
                if index[k] == nil { index[k] = UInt16(code) }
            }
            for single in 0..<9 where index[UInt64(single) | 1 << 56] == nil {
                throw .invalidValue(path: nil, field: "dictionary", reason: "lacks the single pair \(single / 3 - 1), \(single % 3 - 1)")
            }
            self.index = index
        }

        /// The codes of ternary rows ([rows, cols] row-major, cols even) and each row's first code.
        public func encode(_ values: [Int8], rows: Int, cols: Int) -> (codes: [UInt16], offsets: [UInt32]) {
            precondition(cols % 2 == 0 && values.count == rows * cols, "TernaryCodebook.encode: [\(rows), \(cols)] with cols even")
            var codes: [UInt16] = [], offsets: [UInt32] = [0]
            codes.reserveCapacity(rows * cols / 16)
            for r in 0..<rows {
                encodeRow(values[(r * cols)..<((r + 1) * cols)]) { codes.append($0) }
                offsets.append(UInt32(codes.count))
            }
            return (codes, offsets)
        }

        /// How many codes one row (K even) takes.
        func codeCount(_ row: ArraySlice<Int8>) -> Int {
            var n = 0
            encodeRow(row) { _ in n += 1 }
            return n
        }

        /// Greedy longest match over one row: each code in turn to `emit`.
        func encodeRow(_ row: ArraySlice<Int8>, _ emit: (UInt16) -> Void) {
            let s = symbols(row), zeros = zeroRuns(s)
            s.withUnsafeBufferPointer { p in
                var at = 0
                while at < p.count {
                    var n = longestRun(at: at, count: p.count, zeroRuns: zeros)
                    var code = index[key(p.baseAddress! + at, n)]
                    while code == nil && n > 1 {  // a single pair always matches (checked in init)
                        n -= 1
                        code = index[key(p.baseAddress! + at, n)]
                    }
                    emit(code ?? 0)
                    at += n
                }
            }
        }
    }

}
