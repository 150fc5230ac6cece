import MoEModels

/// Turns generated token ids into text as it becomes final: stops on an end-of-sequence id or
/// before a stop string (which is not emitted), and holds back an incomplete UTF-8 sequence
/// and any tail that could still grow into a stop string.
///
/// Decodes incrementally, as vLLM's detokenizer and transformers' `DecodeStream` do: each token
/// decodes a short window of the latest ids, and the text the window adds to the same window
/// without the newest ids is appended. Decoding every id afresh each token (as this did before)
/// cost time and allocations growing with the text: 160 of `moe generate`'s 459 allocations a
/// token at 144 tokens, and 2,000 tokens took 6.1-6.3 s where they now take 5.3-5.5 (Qwen3-MoE-
/// shaped Q4_K_M file). Where a window's text does not extend
/// its shorter self (a decoder whose output depends on more than the window), the whole text is
/// decoded again, so `text` is always what `Tokenizer.decode` gives for `ids`. Special tokens
/// (which that decode skips) stay out of the windows, so a run of them cannot grow one.
public struct TextStream: Sendable {
    let tokenizer: Tokenizer
    let stopStrings: [String]
    let eos: Set<Int>
    /// The longest stop string, in UTF-8 bytes.
    let longestStop: Int
    /// Generated ids so far (an EOS that stopped the stream is not among them).
    public private(set) var ids: [Int] = []
    /// `ids` without the special tokens: what the text is decoded from.
    private var shown: [Int] = []
    /// The text of `ids`, cut before a stop string once one appeared.
    public private(set) var text = ""
    /// UTF-8 bytes of `text` already handed out.
    private var emitted = 0
    /// The window: `shown` from `windowStart` decode to `windowText`, up to `settled`; the text
    /// from `settledBytes` on (UTF-8 bytes of `text`) is what the ids after `settled` added.
    private var windowStart = 0, settled = 0, settledBytes = 0
    private var windowText = ""
    /// Why the stream ended, once it has.
    public private(set) var stopReason: GenerationResult.StopReason?

    public init(tokenizer: Tokenizer, stopStrings: [String], eos: Set<Int>) {
        self.tokenizer = tokenizer
        self.stopStrings = stopStrings.filter { !$0.isEmpty }
        self.eos = eos
        longestStop = self.stopStrings.map(\.utf8.count).max() ?? 0
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
        if tokenizer.isSpecial(id) { return "" }  // no text: nothing more is final
        shown.append(id)
        let changed = appendDecoded()
        // A new stop string ends in what this token changed, so it starts at most the longest
        // stop string's bytes before that (or before the text not yet handed out).
        let from = scalarIndex(atUTF8: min(changed, emitted) - longestStop)
        if let cut = stopStrings.compactMap({ text[from...].range(of: $0)?.lowerBound }).min() {
            text = String(text[..<cut])
            stopReason = .stopString
            return flush()
        }
        var final = text.endIndex
        // Hold back U+FFFDs at the end: a character still incomplete (byte fallback shows one a
        // byte token).
        while final > text.startIndex && text[text.index(before: final)] == "\u{FFFD}" { final = text.index(before: final) }
        // Hold back the longest tail that could still grow into a stop string.
        let tail = text[min(scalarIndex(atUTF8: emitted - longestStop), final)..<final]
        for s in stopStrings {
            for n in stride(from: min(s.count - 1, tail.count), to: 0, by: -1) where text[..<final].hasSuffix(s.prefix(n)) {
                final = min(final, text.index(final, offsetBy: -n))
                break
            }
        }
        let finalBytes = text.utf8.distance(from: text.startIndex, to: final)
        guard finalBytes > emitted else { return "" }
        let piece = String(text[scalarIndex(atUTF8: emitted)..<final])
        emitted = finalBytes
        return piece
    }

    /// Decodes the window with the newest id and puts what it adds after the settled text; the
    /// window moves on once its text ends in a whole character (no incomplete UTF-8 sequence).
    /// Returns the UTF-8 offset in `text` from which it changed.
    private mutating func appendDecoded() -> Int {
        let window = tokenizer.decode(Array(shown[windowStart...]))
        let base = windowText.unicodeScalars
        guard window.unicodeScalars.starts(with: base) else {
            if window.hasSuffix("\u{FFFD}") {
                // The newest ids continue a run of byte tokens the window's start belongs to
                // (byte fallback turns a whole run that is not yet valid UTF-8 into U+FFFDs):
                // until the character is whole, the text shows one U+FFFD for it.
                text.removeSubrange(scalarIndex(atUTF8: settledBytes)...)
                text += "\u{FFFD}"
                return settledBytes
            }
            // The window's text rewrote its own start: decode everything again.
            text = tokenizer.decode(shown)
            emitted = min(emitted, text.utf8.count)
            restartWindow(at: max(0, shown.count - 1))
            return 0
        }
        let changed = settledBytes
        let added = String(window.unicodeScalars.dropFirst(base.count))
        text.removeSubrange(scalarIndex(atUTF8: settledBytes)...)
        text += added
        // Settle: the next window starts where this one's new ids did.
        if !added.isEmpty && !added.hasSuffix("\u{FFFD}") { restartWindow(at: settled) }
        return changed
    }

    /// Starts the window at `start` with every id so far settled (after a settled token, or a
    /// whole decode).
    private mutating func restartWindow(at start: Int) {
        windowStart = start
        settled = shown.count
        settledBytes = text.utf8.count
        windowText = tokenizer.decode(Array(shown[windowStart..<settled]))
    }

    /// The index of `text` at `offset` UTF-8 bytes (clamped to the text), moved back to the
    /// start of the Unicode scalar it falls in.
    private func scalarIndex(atUTF8 offset: Int) -> String.Index {
        let u = text.utf8
        var i = u.index(u.startIndex, offsetBy: max(0, min(offset, u.count)))
        while i > u.startIndex && i < u.endIndex && u[i] & 0xC0 == 0x80 { i = u.index(before: i) }
        return i
    }

    /// Everything not yet handed out (at the end of generation).
    public mutating func flush() -> String {
        guard text.utf8.count > emitted else { return "" }
        let piece = String(text[scalarIndex(atUTF8: emitted)...])
        emitted = text.utf8.count
        return piece
    }

    /// Ends the stream for running out of tokens (when nothing else stopped it).
    public mutating func finish(_ reason: GenerationResult.StopReason) -> String {
        if stopReason == nil { stopReason = reason }
        return flush()
    }
}
