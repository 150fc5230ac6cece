/// A tokenizer pattern compiled for matching in linear time.
///
/// The search is a backtracker in priority order, so it finds the same leftmost-first match as
/// Oniguruma, PCRE and Swift's `Regex`; but it remembers every (instruction, position) pair it
/// has tried and never tries one twice, so finding every match in a text of n scalars costs at
/// most (program length) × (n + 1) steps. A pair that failed fails from any starting point; after
/// a match only the pairs at its end position are forgotten (the only ones a cut cycle can have
/// marked wrongly). Lookarounds have bounded length and are memoised per position.
public struct TokenRegex: Sendable {
    /// The largest program a pattern may compile to.
    static let maxInstructions = 20_000

    let program: RegexProgram

    /// Compiles `pattern`, or throws naming the offset of what is unsupported or too large.
    public init(_ pattern: String) throws(TokenRegexError) {
        var parser = RegexParser(pattern)
        program = try RegexProgram(try parser.parse())
    }

    /// A pattern matching `literal` exactly.
    public init(literal: String) throws(TokenRegexError) {
        program = try RegexProgram(.concat(literal.unicodeScalars.map { .scalars(ScalarClass(literal: $0, caseless: false)) }))
    }

    /// The non-empty leftmost-first matches in `text`, as scalar offsets, left to right.
    public func matches(in text: [UInt32]) -> [Range<Int>] { matchesCountingSteps(in: text).matches }

    /// The matches and the (instruction, position) pairs tried to find them, for the tests that
    /// check the work is bounded by (program length) × (n + 1), lookaround bodies aside.
    func matchesCountingSteps(in text: [UInt32]) -> (matches: [Range<Int>], steps: Int, bound: Int) {
        let search = RegexSearch(program, text)
        var out: [Range<Int>] = []
        var start = 0
        while start <= text.count, let m = search.first(from: start) {
            if m.isEmpty { start = m.lowerBound + 1; continue }
            out.append(m)
            start = m.upperBound
        }
        return (out, search.steps, program.insts.count * (text.count + 1))
    }

    /// `s` split into alternating (isMatch, text) spans that cover it.
    func spans(_ s: String) -> [(Bool, String)] {
        let scalars = Array(s.unicodeScalars)
        func text(_ r: Range<Int>) -> String { String(String.UnicodeScalarView(scalars[r])) }
        var out: [(Bool, String)] = []
        var last = 0
        for m in matches(in: scalars.map(\.value)) {
            if last < m.lowerBound { out.append((false, text(last..<m.lowerBound))) }
            out.append((true, text(m)))
            last = m.upperBound
        }
        if last < scalars.count { out.append((false, text(last..<scalars.count))) }
        return out
    }

    /// `s` with every match replaced by `content`.
    func replacing(in s: String, with content: String) -> String {
        spans(s).reduce(into: "") { $0 += $1.0 ? content : $1.1 }
    }
}

/// A compiled pattern: instructions, the classes they test and the lookaround sub-programs.
final class RegexProgram: Sendable {
    enum Op: UInt8, Sendable { case scalar, split, jump, assert, look, match }
    struct Inst: Sendable { var op: Op; var x: Int32; var y: Int32 }
    /// A lookaround: its body as a program, its direction, sense and length range.
    struct Look: Sendable { let program: RegexProgram; let ahead: Bool; let negated: Bool; let minLength: Int; let maxLength: Int }

    let insts: [Inst]
    let classes: [ScalarClass]
    let looks: [Look]
    let assertions: [RegexAssertion]

    init(_ node: RegexNode) throws(TokenRegexError) {
        var b = Builder()
        try b.emit(node)
        try b.append(.match)
        insts = b.insts
        classes = b.classes
        looks = b.looks
        assertions = b.assertions
    }

    private struct Builder {
        var insts: [Inst] = [], classes: [ScalarClass] = [], looks: [Look] = [], assertions: [RegexAssertion] = []

        @discardableResult
        mutating func append(_ op: Op, _ x: Int = 0, _ y: Int = 0) throws(TokenRegexError) -> Int {
            guard insts.count < TokenRegex.maxInstructions else {
                throw TokenRegexError(offset: 0, reason: "the pattern compiles to more than \(TokenRegex.maxInstructions) instructions")
            }
            insts.append(Inst(op: op, x: Int32(x), y: Int32(y)))
            return insts.count - 1
        }

        mutating func emit(_ node: RegexNode) throws(TokenRegexError) {
            switch node {
            case .empty: break
            case let .scalars(c):
                try append(.scalar, classes.count)
                classes.append(c)
            case let .concat(items):
                for item in items { try emit(item) }
            case let .alternation(branches):
                var exits: [Int] = []
                for (k, branch) in branches.enumerated() {
                    guard k < branches.count - 1 else { try emit(branch); break }
                    let split = try append(.split, insts.count + 1)
                    try emit(branch)
                    exits.append(try append(.jump))
                    insts[split].y = Int32(insts.count)
                }
                for e in exits { insts[e].x = Int32(insts.count) }
            case let .repetition(body, min, max, greedy):
                for _ in 0..<min { try emit(body) }
                if let max {
                    var splits: [Int] = []
                    for _ in min..<max {
                        splits.append(try append(.split))
                        try emit(body)
                    }
                    for s in splits { setSplit(s, body: s + 1, exit: insts.count, greedy: greedy) }
                } else {
                    let top = try append(.split)
                    try emit(body)
                    try append(.jump, top)
                    setSplit(top, body: top + 1, exit: insts.count, greedy: greedy)
                }
            case let .look(body, ahead, negated):
                let range = body.lengthRange
                try append(.look, looks.count)
                looks.append(Look(program: try RegexProgram(body), ahead: ahead, negated: negated,
                                  minLength: range.min, maxLength: range.max ?? range.min))
            case let .assertion(a):
                try append(.assert, assertions.count)
                assertions.append(a)
            }
        }

        mutating func setSplit(_ at: Int, body: Int, exit: Int, greedy: Bool) {
            insts[at].x = Int32(greedy ? body : exit)
            insts[at].y = Int32(greedy ? exit : body)
        }
    }
}

/// One text being searched with one program: the memo of tried (instruction, position) pairs,
/// kept in 8 KiB pages allocated as the search reaches them and freed once it has passed them.
final class RegexSearch {
    private let program: RegexProgram
    private let text: [UInt32]
    private let width: Int
    private var pages: [[UInt64]]
    private var firstLivePage = 0
    /// Bits to clear after an anchored run (lookaround bodies), instead of whole pages.
    private var touched: [Int]?
    /// Per lookaround, per position: 0 unknown, 1 holds, 2 fails.
    private var lookMemo: [[UInt8]]
    private lazy var lookSearches: [RegexSearch] = program.looks.map { RegexSearch($0.program, text, tracking: true) }
    private var stack: [(Int32, Int)] = []
    /// The (instruction, position) pairs tried so far, this search's own (not lookarounds').
    private(set) var steps = 0

    private static let pageBits = 1 << 16
    private static let word = ScalarClass(items: [.word], negated: false)

    init(_ program: RegexProgram, _ text: [UInt32], tracking: Bool = false) {
        self.program = program
        self.text = text
        width = program.insts.count
        pages = Array(repeating: [], count: (width * (text.count + 1)) / Self.pageBits + 1)
        touched = tracking ? [] : nil
        lookMemo = Array(repeating: [], count: program.looks.count)
    }

    /// The leftmost-first match starting at or after `start`.
    func first(from start: Int) -> Range<Int>? {
        releasePages(before: start)
        for s in start...text.count {
            if let end = run(from: s, end: nil) {
                forget(position: end)
                return s..<end
            }
        }
        return nil
    }

    /// Whether a match starts at `s` (ending exactly at `end` when given); the memo is cleared
    /// afterwards.
    func anchored(at s: Int, end: Int?) -> Bool {
        defer {
            for bit in touched ?? [] { pages[bit / Self.pageBits][(bit % Self.pageBits) >> 6] &= ~(1 << UInt64(bit & 63)) }
            touched?.removeAll(keepingCapacity: true)
        }
        return run(from: s, end: end) != nil
    }

    /// Depth-first search in priority order from instruction 0 at `s`; the end of the first match.
    private func run(from s: Int, end required: Int?) -> Int? {
        let insts = program.insts, n = text.count
        stack.removeAll(keepingCapacity: true)
        stack.append((0, s))
        while let (pc0, pos0) = stack.popLast() {
            var pc = Int(pc0), pos = pos0
            while markNew(pc, pos) {
                let inst = insts[pc]
                switch inst.op {
                case .match:
                    if required == nil || required == pos { return pos }
                case .scalar:
                    guard pos < n, program.classes[Int(inst.x)].contains(text[pos]) else { break }
                    pc += 1; pos += 1; continue
                case .split:
                    stack.append((inst.y, pos))
                    pc = Int(inst.x); continue
                case .jump:
                    pc = Int(inst.x); continue
                case .assert:
                    guard holds(program.assertions[Int(inst.x)], at: pos) else { break }
                    pc += 1; continue
                case .look:
                    guard look(Int(inst.x), at: pos) else { break }
                    pc += 1; continue
                }
                break
            }
        }
        return nil
    }

    /// Marks (pc, pos) tried; false when it already was.
    @inline(__always) private func markNew(_ pc: Int, _ pos: Int) -> Bool {
        let bit = pos * width + pc
        let page = bit / Self.pageBits, word = (bit % Self.pageBits) >> 6, mask: UInt64 = 1 << UInt64(bit & 63)
        if pages[page].isEmpty { pages[page] = Array(repeating: 0, count: Self.pageBits / 64) }
        if pages[page][word] & mask != 0 { return false }
        pages[page][word] |= mask
        touched?.append(bit)
        steps += 1
        return true
    }

    /// Clears every pair at `position`, the only ones a successful search can leave marked wrongly.
    private func forget(position: Int) {
        for pc in 0..<width {
            let bit = position * width + pc
            let page = bit / Self.pageBits
            if !pages[page].isEmpty { pages[page][(bit % Self.pageBits) >> 6] &= ~(1 << UInt64(bit & 63)) }
        }
    }

    private func releasePages(before position: Int) {
        let last = position * width / Self.pageBits
        while firstLivePage < last { pages[firstLivePage] = []; firstLivePage += 1 }
    }

    private func holds(_ a: RegexAssertion, at pos: Int) -> Bool {
        switch a {
        case .textStart: return pos == 0
        case .textEnd: return pos == text.count
        case .wordBoundary, .notWordBoundary:
            let word = Self.word
            let before = pos > 0 && word.contains(text[pos - 1]), after = pos < text.count && word.contains(text[pos])
            return (before != after) == (a == .wordBoundary)
        }
    }

    private func look(_ k: Int, at pos: Int) -> Bool {
        if lookMemo[k].isEmpty { lookMemo[k] = Array(repeating: 0, count: text.count + 1) }
        if lookMemo[k][pos] != 0 { return lookMemo[k][pos] == 1 }
        let look = program.looks[k], search = lookSearches[k]
        var found = false
        if look.ahead {
            found = search.anchored(at: pos, end: nil)
        } else {
            for length in look.minLength...look.maxLength where length <= pos {
                if search.anchored(at: pos - length, end: pos) { found = true; break }
            }
        }
        let result = found != look.negated
        lookMemo[k][pos] = result ? 1 : 2
        return result
    }
}
