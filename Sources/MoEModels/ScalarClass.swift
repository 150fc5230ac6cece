/// A set of Unicode scalars a pattern position accepts: ranges, `\s \d \w`, general categories,
/// nested classes, optionally negated and case-insensitive. Membership of ASCII scalars is
/// precomputed into a 128-bit table, so the common case is one bit test.
struct ScalarClass: Sendable {
    /// One member of a class.
    enum Item: Sendable {
        case range(UInt32, UInt32)
        case whitespace, digit, word
        /// A bit mask over `Unicode.GeneralCategory` (see `bit(of:)`).
        case categories(UInt32)
        case nested(ScalarClass)
    }

    let items: [Item]
    let negated: Bool
    let caseless: Bool
    private var ascii: (UInt64, UInt64) = (0, 0)

    init(items: [Item], negated: Bool, caseless: Bool = false) {
        self.items = items
        self.negated = negated
        self.caseless = caseless
        for v in UInt32(0)..<128 where slowContains(v) {
            if v < 64 { ascii.0 |= 1 << UInt64(v) } else { ascii.1 |= 1 << UInt64(v - 64) }
        }
    }

    init(literal c: Unicode.Scalar, caseless: Bool) {
        self.init(items: [.range(c.value, c.value)], negated: false, caseless: caseless)
    }

    /// Whether scalar value `v` is in the class.
    @inline(__always) func contains(_ v: UInt32) -> Bool {
        if v < 64 { return ascii.0 >> UInt64(v) & 1 != 0 }
        if v < 128 { return ascii.1 >> UInt64(v - 64) & 1 != 0 }
        return slowContains(v)
    }

    private func slowContains(_ v: UInt32) -> Bool {
        guard let s = Unicode.Scalar(v) else { return negated }
        var hit = rawContains(s)
        if !hit && caseless {
            for mapped in [s.properties.lowercaseMapping, s.properties.uppercaseMapping] {
                let scalars = mapped.unicodeScalars
                if scalars.count == 1, let m = scalars.first, m != s, rawContains(m) { hit = true; break }
            }
        }
        return hit != negated
    }

    private func rawContains(_ s: Unicode.Scalar) -> Bool {
        for item in items {
            switch item {
            case let .range(lo, hi): if s.value >= lo && s.value <= hi { return true }
            case .whitespace: if s.properties.isWhitespace { return true }
            case .digit: if s.properties.numericType == .decimal { return true }
            case .word:
                if s.properties.isAlphabetic || s.properties.numericType == .decimal { return true }
                let c = s.properties.generalCategory
                if c == .nonspacingMark || c == .spacingMark || c == .enclosingMark || c == .connectorPunctuation { return true }
            case let .categories(mask): if mask & Self.bit(of: s.properties.generalCategory) != 0 { return true }
            case let .nested(inner): if inner.contains(s.value) { return true }
            }
        }
        return false
    }

    /// The general categories a `\p{...}` name covers, by short name (`L`, `Lu`, `N`, `P`,
    /// `L&`/`LC`, ...) or long name (`Letter`, `Uppercase_Letter`, ...); nil for others.
    static func categories(named name: String) -> UInt32? {
        let key = name.replacingOccurrences(of: "_", with: "").replacingOccurrences(of: " ", with: "").lowercased()
        if let m = groups[key] { return m }
        for c in all where short(c).lowercased() == key || long(c) == key { return bit(of: c) }
        return nil
    }

    private static let all: [Unicode.GeneralCategory] = [
        .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter,
        .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .letterNumber, .otherNumber,
        .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation, .initialPunctuation,
        .finalPunctuation, .otherPunctuation, .mathSymbol, .currencySymbol, .modifierSymbol, .otherSymbol,
        .spaceSeparator, .lineSeparator, .paragraphSeparator, .control, .format, .surrogate, .privateUse, .unassigned,
    ]
    private static let shortNames = ["Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe",
                                     "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn"]
    private static let longNames = ["uppercaseletter", "lowercaseletter", "titlecaseletter", "modifierletter", "otherletter",
                                    "nonspacingmark", "spacingmark", "enclosingmark", "decimalnumber", "letternumber", "othernumber",
                                    "connectorpunctuation", "dashpunctuation", "openpunctuation", "closepunctuation", "initialpunctuation",
                                    "finalpunctuation", "otherpunctuation", "mathsymbol", "currencysymbol", "modifiersymbol", "othersymbol",
                                    "spaceseparator", "lineseparator", "paragraphseparator", "control", "format", "surrogate", "privateuse", "unassigned"]
    private static func index(_ c: Unicode.GeneralCategory) -> Int { all.firstIndex(of: c) ?? 29 }
    private static func short(_ c: Unicode.GeneralCategory) -> String { shortNames[index(c)] }
    private static func long(_ c: Unicode.GeneralCategory) -> String { longNames[index(c)] }

    /// The mask bit of one category.
    static func bit(of c: Unicode.GeneralCategory) -> UInt32 {
        switch c {
        case .uppercaseLetter: 1 << 0
        case .lowercaseLetter: 1 << 1
        case .titlecaseLetter: 1 << 2
        case .modifierLetter: 1 << 3
        case .otherLetter: 1 << 4
        case .nonspacingMark: 1 << 5
        case .spacingMark: 1 << 6
        case .enclosingMark: 1 << 7
        case .decimalNumber: 1 << 8
        case .letterNumber: 1 << 9
        case .otherNumber: 1 << 10
        case .connectorPunctuation: 1 << 11
        case .dashPunctuation: 1 << 12
        case .openPunctuation: 1 << 13
        case .closePunctuation: 1 << 14
        case .initialPunctuation: 1 << 15
        case .finalPunctuation: 1 << 16
        case .otherPunctuation: 1 << 17
        case .mathSymbol: 1 << 18
        case .currencySymbol: 1 << 19
        case .modifierSymbol: 1 << 20
        case .otherSymbol: 1 << 21
        case .spaceSeparator: 1 << 22
        case .lineSeparator: 1 << 23
        case .paragraphSeparator: 1 << 24
        case .control: 1 << 25
        case .format: 1 << 26
        case .surrogate: 1 << 27
        case .privateUse: 1 << 28
        case .unassigned: 1 << 29
        @unknown default: 1 << 29
        }
    }

    /// One-letter groups and their long names.
    private static let groups: [String: UInt32] = {
        let letters: UInt32 = 0b11111, cased: UInt32 = 0b111, marks: UInt32 = 0b111 << 5, numbers: UInt32 = 0b111 << 8
        let punctuation: UInt32 = 0b1111111 << 11, symbols: UInt32 = 0b1111 << 18, separators: UInt32 = 0b111 << 22
        let other: UInt32 = 0b11111 << 25
        return ["l": letters, "letter": letters, "lc": cased, "l&": cased, "casedletter": cased,
                "m": marks, "mark": marks, "combiningmark": marks, "n": numbers, "number": numbers,
                "p": punctuation, "punctuation": punctuation, "punct": punctuation, "s": symbols, "symbol": symbols,
                "z": separators, "separator": separators, "c": other, "other": other, "any": ~0]
    }()
}
