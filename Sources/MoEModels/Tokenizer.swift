import Foundation

/// A Hugging Face `tokenizer.json` tokenizer: BPE, byte-level (Qwen, OLMoE, DeepSeek) or
/// SentencePiece-style with byte fallback and the metaspace (Mixtral, Llama).
///
/// The pipeline is the library's: added tokens are split out first; every other piece is
/// normalised, pre-tokenised and run through BPE; the post-processor adds special tokens.
/// Decoding maps ids to token strings and runs the decoder chain. Unknown component types are
/// refused at load with an error naming the field.
///
/// ```swift
/// let tok = try Tokenizer(path: "model/tokenizer.json")
/// let ids = tok.encode("Hello, world!")
/// let text = tok.decode(ids)
/// ```
public final class Tokenizer: @unchecked Sendable {
    public let path: String
    let model: BPEModel
    let normalizer: Normalizer?
    let preTokenizer: PreTokenizer?
    let postProcessor: PostProcessor?
    let decoder: TokenDecoder?
    /// Added tokens, longest content first (so the longest match wins).
    let added: [AddedToken]
    /// `added` as a trie, for matching them in the text.
    let addedTrie: [TrieNode]
    /// The longest added-token content accepted, which bounds the work per character of text.
    static let maxAddedLength = 1024
    let idToToken: [Int: String]
    let specialIDs: Set<Int>
    private var cache: [String: [Int]] = [:]
    private let lock = NSLock()

    /// An added (often special) token: matched in the raw text before anything else.
    struct AddedToken {
        let id: Int, content: String, special: Bool, lstrip: Bool, rstrip: Bool
    }

    /// One past the largest id the tokenizer can produce (its vocabulary and added tokens).
    public var idBound: Int { (idToToken.keys.max() ?? -1) + 1 }

    /// Loads `tokenizer.json`.
    public convenience init(path: String) throws(ModelError) {
        guard let data = FileManager.default.contents(atPath: path) else { throw .io(path: path, reason: "cannot read tokenizer.json") }
        try self.init(data: data, path: path)
    }

    /// Parses tokenizer.json `data` (`path` names it in errors).
    public convenience init(data: Data, path: String) throws(ModelError) {
        guard let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw .invalidFile(path: path, field: "(json)", reason: "not a JSON object")
        }
        try self.init(object: json, path: path)
    }

    /// Builds the tokenizer a parsed tokenizer.json object describes (`path` names it in errors);
    /// with `model`, that BPE model rather than the object's `model` (which is then not read).
    init(object json: [String: Any], path: String, model given: BPEModel? = nil) throws(ModelError) {
        self.path = path
        let reader = JSONReader(path: path)
        if let given {
            model = given
        } else {
            guard let modelJSON = try reader.value(json, "model", "(root)", [String: Any].self) else {
                throw .invalidFile(path: path, field: "model", reason: "missing")
            }
            model = try BPEModel(modelJSON, reader: reader)
        }
        let root = "(root)"
        normalizer = try reader.value(json, "normalizer", root, [String: Any].self).map { j throws(ModelError) in try Normalizer(j, field: "normalizer", reader: reader) }
        preTokenizer = try reader.value(json, "pre_tokenizer", root, [String: Any].self).map { j throws(ModelError) in try PreTokenizer(j, field: "pre_tokenizer", reader: reader) }
        postProcessor = try reader.value(json, "post_processor", root, [String: Any].self).map { j throws(ModelError) in try PostProcessor(j, field: "post_processor", reader: reader) }
        decoder = try reader.value(json, "decoder", root, [String: Any].self).map { j throws(ModelError) in try TokenDecoder(j, field: "decoder", reader: reader) }
        var added: [AddedToken] = []
        for (i, item) in (try reader.value(json, "added_tokens", root, [[String: Any]].self) ?? []).enumerated() {
            guard let id = item["id"] as? Int, let content = item["content"] as? String else {
                throw .invalidFile(path: path, field: "added_tokens[\(i)]", reason: "needs an integer id and a content string")
            }
            let f = "added_tokens[\(i)]"
            added.append(AddedToken(id: id, content: content, special: try reader.value(item, "special", f, Bool.self) ?? false,
                                    lstrip: try reader.value(item, "lstrip", f, Bool.self) ?? false,
                                    rstrip: try reader.value(item, "rstrip", f, Bool.self) ?? false))
        }
        for (i, a) in added.enumerated() where a.content.unicodeScalars.count > Self.maxAddedLength {
            throw .invalidFile(path: path, field: "added_tokens[\(i)].content", reason: "longer than \(Self.maxAddedLength) characters")
        }
        self.added = added.filter { !$0.content.isEmpty }.sorted { $0.content.unicodeScalars.count > $1.content.unicodeScalars.count }
        addedTrie = Self.trie(self.added)
        var inverse: [Int: String] = [:]
        inverse.reserveCapacity(model.vocab.count + added.count)
        for (token, id) in model.vocab { inverse[id] = token }
        for a in added { inverse[a.id] = a.content }
        idToToken = inverse
        specialIDs = Set(added.filter(\.special).map(\.id))
    }

    /// Vocabulary size: the largest id plus one.
    public var vocabularySize: Int { (idToToken.keys.max() ?? -1) + 1 }

    /// The id of `token` (a vocabulary or added token), if any.
    public func id(of token: String) -> Int? { added.first { $0.content == token }?.id ?? model.vocab[token] }

    /// The token string of `id`, if any.
    public func token(of id: Int) -> String? { idToToken[id] }

    /// Whether `id` is a special token.
    public func isSpecial(_ id: Int) -> Bool { specialIDs.contains(id) }

    /// Token ids for `text`; with `addSpecialTokens`, the post-processor's (a BOS, say) too.
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        var ids: [Int] = []
        for segment in splitAdded(text) {
            switch segment {
            case let .added(id): ids.append(id)
            case let .text(piece): ids += encodeText(piece)
            }
        }
        return addSpecialTokens ? (postProcessor?.apply(ids) ?? ids) : ids
    }

    /// Text for `ids`; `skipSpecialTokens` leaves special tokens out.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) -> String {
        let tokens = ids.compactMap { id -> String? in
            if skipSpecialTokens && specialIDs.contains(id) { return nil }
            return idToToken[id]
        }
        return decoder?.decode(tokens) ?? tokens.joined()
    }

    enum Segment { case added(Int), text(String) }

    /// Splits out added tokens (the longest match at each position), honouring their lstrip
    /// and rstrip. A walk of `addedTrie` per position: at most `maxAddedLength` steps each.
    func splitAdded(_ text: String) -> [Segment] {
        if added.isEmpty { return [.text(text)] }
        let scalars = Array(text.unicodeScalars)
        var segments: [Segment] = []
        var current = String.UnicodeScalarView()
        var i = 0
        while i < scalars.count {
            var node = 0, j = i, found: (token: Int, end: Int)?
            while j < scalars.count, let next = addedTrie[node].children[scalars[j].value] {
                node = next
                j += 1
                if let t = addedTrie[node].token { found = (t, j) }
            }
            guard let (t, end) = found else {
                current.append(scalars[i])
                i += 1
                continue
            }
            let a = added[t]
            if a.lstrip { while let last = current.last, last.properties.isWhitespace { current.removeLast() } }
            if !current.isEmpty { segments.append(.text(String(current))) }
            current = String.UnicodeScalarView()
            segments.append(.added(a.id))
            i = end
            if a.rstrip { while i < scalars.count && scalars[i].properties.isWhitespace { i += 1 } }
        }
        if !current.isEmpty { segments.append(.text(String(current))) }
        return segments
    }

    /// A trie node over added-token contents: children by scalar, and the added token (an
    /// index into `added`) that ends here.
    struct TrieNode { var children: [UInt32: Int] = [:]; var token: Int? }

    /// The trie of `added`, the longest content winning where two are equal.
    static func trie(_ added: [AddedToken]) -> [TrieNode] {
        var nodes = [TrieNode()]
        for (t, a) in added.enumerated() {
            var node = 0
            for s in a.content.unicodeScalars {
                if let next = nodes[node].children[s.value] { node = next; continue }
                nodes.append(TrieNode())
                nodes[node].children[s.value] = nodes.count - 1
                node = nodes.count - 1
            }
            if nodes[node].token == nil { nodes[node].token = t }
        }
        return nodes
    }

    /// Normalise, pre-tokenise and BPE one piece of text between added tokens.
    func encodeText(_ text: String) -> [Int] {
        let normalized = normalizer?.apply(text) ?? text
        if normalized.isEmpty { return [] }
        let pieces = preTokenizer?.apply([normalized]) ?? [normalized]
        var ids: [Int] = []
        for piece in pieces where !piece.isEmpty {
            lock.lock()
            let hit = cache[piece]
            lock.unlock()
            if let hit { ids += hit; continue }
            let out = model.encode(piece)
            lock.lock()
            if cache.count < 100_000 { cache[piece] = out }
            lock.unlock()
            ids += out
        }
        return ids
    }
}

/// Typed access to tokenizer.json values, with errors naming the file and field.
struct JSONReader {
    let path: String
    func string(_ j: [String: Any], _ key: String, _ field: String) throws(ModelError) -> String {
        guard let v = j[key] as? String else { throw .invalidFile(path: path, field: "\(field).\(key)", reason: "missing or not a string") }
        return v
    }
    func type(_ j: [String: Any], _ field: String) throws(ModelError) -> String { try string(j, "type", field) }
    /// `j[key]` as a `T`: nil when absent or null, an error naming the field when present with
    /// another type (a wrong-typed field is never read as absent).
    func value<T>(_ j: [String: Any], _ key: String, _ field: String, _ type: T.Type) throws(ModelError) -> T? {
        // The null test looks at the value's type: `v is NSNull` on a Swift dictionary or array
        // bridges all of it to Foundation first (most of a 150K vocabulary's load went there).
        guard let v = j[key], !(Swift.type(of: v) is NSNull.Type) else { return nil }
        guard let t = v as? T else {
            throw .invalidFile(path: path, field: "\(field).\(key)", reason: "expected \(Self.kind(T.self)), found \(Self.kind(of: v))")
        }
        return t
    }
    static func kind(_ t: Any.Type) -> String {
        switch t {
        case is String.Type: return "a string"
        case is Bool.Type: return "true or false"
        case is Int.Type: return "an integer"
        case is [String: Any].Type, is [String: Int].Type: return "an object"
        default: return "an array"
        }
    }
    static func kind(of v: Any) -> String {
        switch v {
        case is String: return "a string"
        case is NSNumber: return "a number"
        case is [Any]: return "an array"
        case is [String: Any]: return "an object"
        default: return "\(Swift.type(of: v))"
        }
    }
    func unsupported(_ field: String, _ type: String) -> ModelError {
        .invalidFile(path: path, field: "\(field).type", reason: "'\(type)' is not supported")
    }
    /// A `{"String": s}` or `{"Regex": r}` pattern as a regex.
    func pattern(_ j: [String: Any], _ field: String) throws(ModelError) -> TokenRegex {
        guard let p = j["pattern"] as? [String: Any] else { throw .invalidFile(path: path, field: "\(field).pattern", reason: "missing") }
        do {
            if let s = p["String"] as? String { return try TokenRegex(literal: s) }
            if let r = p["Regex"] as? String { return try TokenRegex(r) }
        } catch {
            throw .invalidFile(path: path, field: "\(field).pattern", reason: "cannot compile: \(error)")
        }
        throw .invalidFile(path: path, field: "\(field).pattern", reason: "needs String or Regex")
    }
}
