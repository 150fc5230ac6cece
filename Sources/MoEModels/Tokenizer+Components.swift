import Foundation

// The tokenizer.json components MoEKit implements: normalizers, pre-tokenizers, the BPE model,
// post-processors and decoders. Each is built from its JSON object and refuses unknown types.

// MARK: - Normalizers

/// A tokenizer.json normalizer.
indirect enum Normalizer {
    case nfc, nfd, nfkc, nfkd, lowercase
    case prepend(String)
    case replace(TokenRegex, String)
    case strip(left: Bool, right: Bool)
    case sequence([Normalizer])

    init(_ j: [String: Any], field: String, reader: JSONReader) throws(ModelError) {
        switch try reader.type(j, field) {
        case "NFC": self = .nfc
        case "NFD": self = .nfd
        case "NFKC": self = .nfkc
        case "NFKD": self = .nfkd
        case "Lowercase": self = .lowercase
        case "Prepend": self = .prepend(try reader.string(j, "prepend", field))
        case "Replace": self = .replace(try reader.pattern(j, field), try reader.string(j, "content", field))
        case "Strip": self = .strip(left: try reader.value(j, "strip_left", field, Bool.self) ?? true, right: try reader.value(j, "strip_right", field, Bool.self) ?? true)
        case "Sequence":
            guard let items = j["normalizers"] as? [[String: Any]] else {
                throw .invalidFile(path: reader.path, field: "\(field).normalizers", reason: "missing")
            }
            var list: [Normalizer] = []
            for (i, item) in items.enumerated() { list.append(try Normalizer(item, field: "\(field).normalizers[\(i)]", reader: reader)) }
            self = .sequence(list)
        case let other: throw reader.unsupported(field, other)
        }
    }

    func apply(_ s: String) -> String {
        switch self {
        case .nfc: return s.precomposedStringWithCanonicalMapping
        case .nfd: return s.decomposedStringWithCanonicalMapping
        case .nfkc: return s.precomposedStringWithCompatibilityMapping
        case .nfkd: return s.decomposedStringWithCompatibilityMapping
        case .lowercase: return s.lowercased()
        case let .prepend(p): return s.isEmpty ? s : p + s
        case let .replace(regex, content): return regex.replacing(in: s, with: content)
        case let .strip(left, right):
            var scalars = Substring(s).unicodeScalars[...]
            if left { while let f = scalars.first, f.properties.isWhitespace { scalars.removeFirst() } }
            if right { while let l = scalars.last, l.properties.isWhitespace { scalars.removeLast() } }
            return String(String.UnicodeScalarView(scalars))
        case let .sequence(list): return list.reduce(s) { $1.apply($0) }
        }
    }
}

// MARK: - Pre-tokenizers

/// The GPT-2 split used by `ByteLevel` with `use_regex`.
let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
let gpt2Regex = try! TokenRegex(gpt2Pattern)  // safe: a constant pattern the tests compile

/// A tokenizer.json pre-tokenizer: splits normalised text into pieces BPE sees separately.
indirect enum PreTokenizer {
    enum Behavior: String { case isolated = "Isolated", removed = "Removed", mergedWithPrevious = "MergedWithPrevious", mergedWithNext = "MergedWithNext" }
    case split(TokenRegex, Behavior, invert: Bool)
    case byteLevel(addPrefixSpace: Bool, useRegex: TokenRegex?)
    case metaspace(replacement: String, prependScheme: String, split: Bool)
    case digits(individual: Bool)
    case sequence([PreTokenizer])

    init(_ j: [String: Any], field: String, reader: JSONReader) throws(ModelError) {
        switch try reader.type(j, field) {
        case "Split":
            let raw = try reader.value(j, "behavior", field, String.self) ?? "Isolated"
            guard let behavior = Behavior(rawValue: raw) else {
                throw .invalidFile(path: reader.path, field: "\(field).behavior", reason: "'\(raw)' is not supported")
            }
            self = .split(try reader.pattern(j, field), behavior, invert: try reader.value(j, "invert", field, Bool.self) ?? false)
        case "ByteLevel":
            let regex = try reader.value(j, "use_regex", field, Bool.self) ?? true ? gpt2Regex : nil
            self = .byteLevel(addPrefixSpace: try reader.value(j, "add_prefix_space", field, Bool.self) ?? false, useRegex: regex)
        case "Metaspace":
            let prefix = try reader.value(j, "add_prefix_space", field, Bool.self) ?? true
            var scheme = try reader.value(j, "prepend_scheme", field, String.self) ?? (prefix ? "always" : "never")
            scheme = scheme.lowercased()
            self = .metaspace(replacement: try reader.value(j, "replacement", field, String.self) ?? "\u{2581}", prependScheme: scheme, split: try reader.value(j, "split", field, Bool.self) ?? true)
        case "Digits":
            self = .digits(individual: try reader.value(j, "individual_digits", field, Bool.self) ?? false)
        case "Sequence":
            guard let items = j["pretokenizers"] as? [[String: Any]] else {
                throw .invalidFile(path: reader.path, field: "\(field).pretokenizers", reason: "missing")
            }
            var list: [PreTokenizer] = []
            for (i, item) in items.enumerated() { list.append(try PreTokenizer(item, field: "\(field).pretokenizers[\(i)]", reader: reader)) }
            self = .sequence(list)
        case let other: throw reader.unsupported(field, other)
        }
    }

    /// Applies this pre-tokenizer to every piece.
    func apply(_ pieces: [String]) -> [String] {
        switch self {
        case let .sequence(list): return list.reduce(pieces) { $1.apply($0) }
        default: return pieces.enumerated().flatMap { apply(piece: $0.element, first: $0.offset == 0) }
        }
    }

    func apply(piece: String, first: Bool) -> [String] {
        switch self {
        case let .split(regex, behavior, invert):
            return Self.split(piece, regex, behavior, invert: invert)
        case let .byteLevel(addPrefixSpace, regex):
            var s = piece
            if addPrefixSpace && !s.hasPrefix(" ") { s = " " + s }
            let parts = regex.map { Self.split(s, $0, .isolated, invert: false) } ?? [s]
            return parts.map(ByteLevelAlphabet.encode)
        case let .metaspace(replacement, scheme, split):
            var s = piece.replacingOccurrences(of: " ", with: replacement)
            if (scheme == "always" || (scheme == "first" && first)) && !s.hasPrefix(replacement) { s = replacement + s }
            guard split else { return [s] }
            var out: [String] = [], current = ""
            for ch in s.unicodeScalars {
                if String(ch) == replacement && !current.isEmpty { out.append(current); current = "" }
                current.unicodeScalars.append(ch)
            }
            if !current.isEmpty { out.append(current) }
            return out
        case let .digits(individual):
            var out: [String] = [], current = "", inDigits = false
            for ch in piece.unicodeScalars {
                let isDigit = ch.properties.numericType == .decimal
                if isDigit && (individual || !inDigits) || !isDigit && inDigits {
                    if !current.isEmpty { out.append(current) }
                    current = ""
                }
                current.unicodeScalars.append(ch)
                inDigits = isDigit
            }
            if !current.isEmpty { out.append(current) }
            return out
        case .sequence:
            return apply([piece])
        }
    }

    /// Splits `s` around the matches of `regex` as the library's `Split` does.
    static func split(_ s: String, _ regex: TokenRegex, _ behavior: Behavior, invert: Bool) -> [String] {
        var spans = regex.spans(s)
        if invert { spans = spans.map { (!$0.0, $0.1) } }
        var out: [String] = []
        switch behavior {
        case .isolated: out = spans.map { String($0.1) }
        case .removed: out = spans.filter { !$0.0 }.map { String($0.1) }
        case .mergedWithPrevious:
            for (isMatch, text) in spans {
                if isMatch, !out.isEmpty { out[out.count - 1] += text } else { out.append(String(text)) }
            }
        case .mergedWithNext:
            var pending = ""
            for (isMatch, text) in spans {
                if isMatch { pending += text } else { out.append(pending + text); pending = "" }
            }
            if !pending.isEmpty { out.append(pending) }
        }
        return out.filter { !$0.isEmpty }
    }
}

/// GPT-2's reversible map from bytes to printable characters (`bytes_to_unicode`).
enum ByteLevelAlphabet {
    static let byteToScalar: [Unicode.Scalar] = {
        var printable = Set<Int>()
        for r in [33...126, 161...172, 174...255] { for b in r { printable.insert(b) } }
        var extra = 0
        return (0..<256).map { b -> Unicode.Scalar in
            if printable.contains(b) { return Unicode.Scalar(UInt8(b)) }
            defer { extra += 1 }
            return Unicode.Scalar(UInt32(256 + extra))!  // safe: 256...323 are valid scalars
        }
    }()

    static let scalarToByte: [Unicode.Scalar: UInt8] = {
        var map: [Unicode.Scalar: UInt8] = [:]
        for (b, s) in byteToScalar.enumerated() { map[s] = UInt8(b) }
        return map
    }()

    /// The UTF-8 bytes of `s` as byte-level characters.
    static func encode(_ s: String) -> String {
        var out = String.UnicodeScalarView()
        for b in s.utf8 { out.append(byteToScalar[Int(b)]) }
        return String(out)
    }

    /// Bytes back from byte-level characters (others contribute their own UTF-8).
    static func decodeBytes(_ s: String) -> [UInt8] {
        var bytes: [UInt8] = []
        for scalar in s.unicodeScalars {
            if let b = scalarToByte[scalar] { bytes.append(b) } else { bytes += Array(String(scalar).utf8) }
        }
        return bytes
    }
}

// MARK: - BPE model

/// Byte-pair encoding with merge ranks, as tokenizer.json's `"type": "BPE"` model.
struct BPEModel {
    let vocab: [String: Int]
    /// Merge rank by pair "a b".
    let ranks: [String: Int]
    let unkID: Int?
    let fuseUnk: Bool
    let byteFallback: Bool
    let ignoreMerges: Bool

    init(_ j: [String: Any], reader: JSONReader) throws(ModelError) {
        let field = "model"
        let type = try reader.value(j, "type", field, String.self) ?? "BPE"
        guard type == "BPE" else { throw reader.unsupported("model", type) }
        guard let v = j["vocab"] as? [String: Int] else { throw .invalidFile(path: reader.path, field: "model.vocab", reason: "missing or not {token: id}") }
        let merges = try reader.value(j, "merges", field, [Any].self) ?? []
        var joined: [String] = []
        joined.reserveCapacity(merges.count)
        for (i, m) in merges.enumerated() {
            if let s = m as? String { joined.append(s) }
            else if let pair = m as? [String], pair.count == 2 { joined.append("\(pair[0]) \(pair[1])") }
            else { throw .invalidFile(path: reader.path, field: "model.merges[\(i)]", reason: "not \"a b\" or [a, b]") }
        }
        if let p = j["continuing_subword_prefix"] as? String, !p.isEmpty {
            throw .invalidFile(path: reader.path, field: "model.continuing_subword_prefix", reason: "is not supported")
        }
        self.init(vocab: v, merges: joined, unkToken: try reader.value(j, "unk_token", field, String.self),
                  fuseUnk: try reader.value(j, "fuse_unk", field, Bool.self) ?? false,
                  byteFallback: try reader.value(j, "byte_fallback", field, Bool.self) ?? false,
                  ignoreMerges: try reader.value(j, "ignore_merges", field, Bool.self) ?? false)
    }

    /// The model of a vocabulary and its merges in rank order, each "a b" (the two pieces joined
    /// by a space, as tokenizer.json and GGUF store them); a merge given twice keeps its first
    /// rank. The typed path a GGUF vocabulary takes: a parsed tokenizer.json object holding
    /// these (a few hundred thousand entries) cost most of the load in dynamic casts.
    init(vocab: [String: Int], merges: [String], unkToken: String? = nil, fuseUnk: Bool = false,
         byteFallback: Bool = false, ignoreMerges: Bool = false) {
        self.vocab = vocab
        var ranks: [String: Int] = [:]
        ranks.reserveCapacity(merges.count)
        for (i, m) in merges.enumerated() where ranks[m] == nil { ranks[m] = i }
        self.ranks = ranks
        unkID = unkToken.flatMap { vocab[$0] }
        self.fuseUnk = fuseUnk
        self.byteFallback = byteFallback
        self.ignoreMerges = ignoreMerges
    }

    /// Ids for one pre-tokenised piece.
    func encode(_ piece: String) -> [Int] {
        if ignoreMerges, let id = vocab[piece] { return [id] }
        let symbols = merged(piece.unicodeScalars.map { String($0) })
        var ids: [Int] = []
        var lastWasUnk = false
        for s in symbols {
            if let id = vocab[s] { ids.append(id); lastWasUnk = false; continue }
            if byteFallback {
                let bytes = s.utf8.map { vocab[String(format: "<0x%02X>", $0)] }
                if bytes.allSatisfy({ $0 != nil }) { ids += bytes.compactMap { $0 }; lastWasUnk = false; continue }
            }
            if let unk = unkID {
                if !(fuseUnk && lastWasUnk) { ids.append(unk) }
                lastWasUnk = true
            }
        }
        return ids
    }

    /// Applies the merges: the lowest-ranked adjacent pair first (leftmost on ties), until none
    /// is left. A heap of candidate pairs over a linked list of symbols makes this O(n log n) in
    /// the piece's length, so a long unbroken piece (SentencePiece text has no pre-split) costs
    /// what its length says, not its square.
    func merged(_ initial: [String]) -> [String] {
        var symbols = initial
        let n = symbols.count
        if n < 2 || ranks.isEmpty { return symbols }
        var next = Array(1...n), prev = Array(-1..<(n - 1))
        var alive = [Bool](repeating: true, count: n)
        var heap = PairHeap()
        func consider(_ left: Int, _ right: Int) {
            if let rank = ranks["\(symbols[left]) \(symbols[right])"] {
                heap.push(.init(rank: rank, left: left, right: right,
                                leftBytes: symbols[left].utf8.count, rightBytes: symbols[right].utf8.count))
            }
        }
        for i in 0..<(n - 1) { consider(i, i + 1) }
        while let c = heap.pop() {
            // A candidate is stale once either side has merged with something else.
            guard alive[c.left], alive[c.right], next[c.left] == c.right, symbols[c.left].utf8.count == c.leftBytes,
                  symbols[c.right].utf8.count == c.rightBytes else { continue }
            symbols[c.left] += symbols[c.right]
            alive[c.right] = false
            next[c.left] = next[c.right]
            if next[c.left] < n { prev[next[c.left]] = c.left }
            if prev[c.left] >= 0 { consider(prev[c.left], c.left) }
            if next[c.left] < n { consider(c.left, next[c.left]) }
        }
        return (0..<n).filter { alive[$0] }.map { symbols[$0] }
    }
}

/// A binary min-heap of merge candidates ordered by (rank, left position).
struct PairHeap {
    struct Candidate { var rank: Int, left: Int, right: Int, leftBytes: Int, rightBytes: Int }
    var items: [Candidate] = []

    static func less(_ a: Candidate, _ b: Candidate) -> Bool { a.rank != b.rank ? a.rank < b.rank : a.left < b.left }

    mutating func push(_ c: Candidate) {
        items.append(c)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if !Self.less(items[i], items[parent]) { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> Candidate? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < items.count && Self.less(items[l], items[m]) { m = l }
                if r < items.count && Self.less(items[r], items[m]) { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        return top
    }
}

// MARK: - Post-processors

/// A tokenizer.json post-processor (only what a single sequence needs).
indirect enum PostProcessor {
    /// Items: a special token's ids, or the sequence itself (nil).
    case template([[Int]?])
    case none
    case sequence([PostProcessor])

    init(_ j: [String: Any], field: String, reader: JSONReader) throws(ModelError) {
        switch try reader.type(j, field) {
        case "ByteLevel": self = .none
        case "TemplateProcessing":
            guard let single = j["single"] as? [[String: Any]] else {
                throw .invalidFile(path: reader.path, field: "\(field).single", reason: "missing")
            }
            let specials = j["special_tokens"] as? [String: [String: Any]] ?? [:]
            var items: [[Int]?] = []
            for (i, item) in single.enumerated() {
                if item["Sequence"] != nil { items.append(nil); continue }
                guard let st = item["SpecialToken"] as? [String: Any], let name = st["id"] as? String,
                      let ids = specials[name]?["ids"] as? [Int] else {
                    throw .invalidFile(path: reader.path, field: "\(field).single[\(i)]", reason: "needs a Sequence or a known SpecialToken")
                }
                items.append(ids)
            }
            self = .template(items)
        case "Sequence":
            let items = j["processors"] as? [[String: Any]] ?? []
            var list: [PostProcessor] = []
            for (i, item) in items.enumerated() { list.append(try PostProcessor(item, field: "\(field).processors[\(i)]", reader: reader)) }
            self = .sequence(list)
        case let other: throw reader.unsupported(field, other)
        }
    }

    func apply(_ ids: [Int]) -> [Int] {
        switch self {
        case .none: return ids
        case let .template(items): return items.flatMap { $0 ?? ids }
        case let .sequence(list): return list.reduce(ids) { $1.apply($0) }
        }
    }
}

// MARK: - Decoders

/// A tokenizer.json decoder: token strings back to text.
indirect enum TokenDecoder {
    case byteLevel
    case replace(String, String)
    case byteFallback
    case fuse
    case strip(String, start: Int, stop: Int)
    case metaspace(replacement: String, prependScheme: String)
    case sequence([TokenDecoder])

    init(_ j: [String: Any], field: String, reader: JSONReader) throws(ModelError) {
        switch try reader.type(j, field) {
        case "ByteLevel": self = .byteLevel
        case "Replace":
            guard let p = j["pattern"] as? [String: Any], let s = p["String"] as? String else {
                throw .invalidFile(path: reader.path, field: "\(field).pattern", reason: "only String patterns are supported in decoders")
            }
            self = .replace(s, try reader.string(j, "content", field))
        case "ByteFallback": self = .byteFallback
        case "Fuse": self = .fuse
        case "Strip": self = .strip(try reader.string(j, "content", field), start: j["start"] as? Int ?? 0, stop: j["stop"] as? Int ?? 0)
        case "Metaspace":
            let prefix = try reader.value(j, "add_prefix_space", field, Bool.self) ?? true
            let scheme = (try reader.value(j, "prepend_scheme", field, String.self) ?? (prefix ? "always" : "never")).lowercased()
            self = .metaspace(replacement: try reader.value(j, "replacement", field, String.self) ?? "\u{2581}", prependScheme: scheme)
        case "Sequence":
            guard let items = j["decoders"] as? [[String: Any]] else {
                throw .invalidFile(path: reader.path, field: "\(field).decoders", reason: "missing")
            }
            var list: [TokenDecoder] = []
            for (i, item) in items.enumerated() { list.append(try TokenDecoder(item, field: "\(field).decoders[\(i)]", reader: reader)) }
            self = .sequence(list)
        case let other: throw reader.unsupported(field, other)
        }
    }

    func decode(_ tokens: [String]) -> String { step(tokens).joined() }

    /// One decoder over the token strings (the library's `decode_chain`).
    func step(_ tokens: [String]) -> [String] {
        switch self {
        case .byteLevel:
            return [String(decoding: tokens.flatMap(ByteLevelAlphabet.decodeBytes), as: UTF8.self)]
        case let .replace(pattern, content):
            return tokens.map { $0.replacingOccurrences(of: pattern, with: content) }
        case .byteFallback:
            var out: [String] = [], bytes: [UInt8] = [], count = 0
            func flush() {
                guard count > 0 else { return }
                if let s = String(validating: bytes, as: UTF8.self) { out.append(s) }
                else { out += [String](repeating: "\u{FFFD}", count: count) }
                bytes = []
                count = 0
            }
            for t in tokens {
                if t.count == 6, t.hasPrefix("<0x"), t.hasSuffix(">"), let b = UInt8(t.dropFirst(3).dropLast(), radix: 16) {
                    bytes.append(b)
                    count += 1
                } else {
                    flush()
                    out.append(t)
                }
            }
            flush()
            return out
        case .fuse:
            return [tokens.joined()]
        case let .strip(content, start, stop):
            return tokens.map { t in
                var chars = Array(t)
                var s = 0
                while s < start, let f = chars.first, String(f) == content { chars.removeFirst(); s += 1 }
                var e = 0
                while e < stop, let l = chars.last, String(l) == content { chars.removeLast(); e += 1 }
                return String(chars)
            }
        case let .metaspace(replacement, scheme):
            return tokens.enumerated().map { i, t in
                var s = t.replacingOccurrences(of: replacement, with: " ")
                if i == 0 && scheme != "never" && s.hasPrefix(" ") { s.removeFirst() }
                return s
            }
        case let .sequence(list):
            return list.reduce(tokens) { $1.step($0) }
        }
    }
}
