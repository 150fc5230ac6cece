import MoEModels

/// Turns generated token ids into text as it becomes final: stops on an end-of-sequence id or
/// before a stop string (which is not emitted), and holds back an incomplete UTF-8 sequence
/// and any tail that could still grow into a stop string.
public struct TextStream: Sendable {
    let tokenizer: Tokenizer
    let stopStrings: [String]
    let eos: Set<Int>
    /// Generated ids so far (an EOS that stopped the stream is not among them).
    public private(set) var ids: [Int] = []
    /// The text of `ids`, cut before a stop string once one appeared.
    public private(set) var text = ""
    /// Characters of `text` already handed out.
    private var emitted = 0
    /// Why the stream ended, once it has.
    public private(set) var stopReason: GenerationResult.StopReason?

    public init(tokenizer: Tokenizer, stopStrings: [String], eos: Set<Int>) {
        self.tokenizer = tokenizer
        self.stopStrings = stopStrings.filter { !$0.isEmpty }
        self.eos = eos
    }

    /// Takes the next token; returns the text that became final (possibly empty). After an EOS
    /// or a stop string, `stopReason` is set and later tokens are ignored.
    public mutating func push(_ id: Int) -> String {
        guard stopReason == nil else { return "" }
        if eos.contains(id) {
            stopReason = .eos
            return flush()
        }
        ids.append(id)
        text = tokenizer.decode(ids, skipSpecialTokens: true)
        if let cut = stopStrings.compactMap({ text.range(of: $0)?.lowerBound }).min() {
            text = String(text[..<cut])
            stopReason = .stopString
            return flush()
        }
        var final = text.endIndex
        if text.hasSuffix("\u{FFFD}") { final = text.index(before: final) }
        for s in stopStrings {
            for n in stride(from: min(s.count - 1, text.count), to: 0, by: -1) where text[..<final].hasSuffix(s.prefix(n)) {
                final = min(final, text.index(final, offsetBy: -n))
                break
            }
        }
        let finalCount = text.distance(from: text.startIndex, to: final)
        guard finalCount > emitted else { return "" }
        let piece = String(text[text.index(text.startIndex, offsetBy: emitted)..<final])
        emitted = finalCount
        return piece
    }

    /// Everything not yet handed out (at the end of generation).
    public mutating func flush() -> String {
        guard text.count > emitted else { return "" }
        let piece = String(text.dropFirst(emitted))
        emitted = text.count
        return piece
    }

    /// Ends the stream for running out of tokens (when nothing else stopped it).
    public mutating func finish(_ reason: GenerationResult.StopReason) -> String {
        if stopReason == nil { stopReason = reason }
        return flush()
    }
}
