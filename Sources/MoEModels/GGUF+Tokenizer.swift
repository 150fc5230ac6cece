import Foundation

/// The tokenizer a GGUF file carries (`tokenizer.ggml.*`), as the tokenizer.json that
/// `Tokenizer` reads: for `tokenizer.ggml.model` `gpt2`, a byte-level BPE with the vocabulary,
/// the merges, the control and user-defined tokens as added tokens, and the split that
/// `tokenizer.ggml.pre` names (llama.cpp's `llama-vocab.cpp` regexes, applied in turn); for
/// `llama`, SentencePiece with scores (Mistral, Mixtral, Llama 2), as `sentencePieceParts`.
extension GGUFFile {
    /// llama.cpp's pre-tokenizer regexes by `tokenizer.ggml.pre` (GPT-2's for `default`).
    static let preTokenizerPatterns: [String: [String]] = {
        let gpt2 = [#"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"#]
        let qwen2 = [#"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#]
        let llama3 = [#"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#]
        let deepseek3 = [#"\p{N}{1,3}"#, #"[一-龥぀-ゟ゠-ヿ]+"#,
                         ##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##]
        // DeepSeek-LLM and DeepSeek-V2: llama.cpp's patterns, code point for code point.
        let deepseekLLM = ["[\r\n]",
                           "\\s?[A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}\u{37F}\u{386}\u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\u{10A0}-\u{10C5}\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}\u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}\u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}\u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}\u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}\u{A722}-\u{A76F}\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}]+",
                           "\\s?[!-/:-~\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF5E}\u{2018}-\u{201F}\u{3000}-\u{3002}]+",
                           "\\s+$",
                           "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+",
                           "\\p{N}+"]
        // GPT-4o's o200k split, as its tokenizer.json (and GPT-OSS's) gives it; llama.cpp runs an
        // ASCII approximation of its letter cases.
        let gpt4o = [#"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"#]
        // Mistral's Tekken (Mistral-Nemo, Mistral Small 3), as its tokenizer.json gives it.
        let tekken = [#"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"#]
        return ["default": gpt2, "gpt-2": gpt2, "olmo": gpt2, "mpt": gpt2, "qwen2": qwen2, "llama-bpe": llama3, "llama3": llama3,
                "deepseek-v3": deepseek3, "deepseek-llm": deepseekLLM, "gpt-4o": gpt4o, "glm4": llama3, "tekken": tekken]
    }()

    /// The pre-tokenizers whose whole pieces found in the vocabulary are taken as they are,
    /// before any merge (llama.cpp's `ignore_merges`; tokenizer.json's `model.ignore_merges`).
    static let preTokenizersIgnoringMerges: Set<String> = ["llama-bpe", "llama3", "glm4", "tekken"]

    /// The pre-tokenizers whose vocabularies put BOS in front when `tokenizer.ggml.add_bos_token`
    /// is absent (llama.cpp's default for them; the key, when present, decides).
    static let preTokenizersAddingBOS: Set<String> = ["llama-bpe", "llama3", "tekken"]

    /// The tokenizer.json this file's tokenizer metadata describes; a typed error naming the key
    /// when it is missing or of a kind MoEKit does not read.
    public func tokenizerJSON() throws(ModelError) -> Data {
        guard let data = try? JSONSerialization.data(withJSONObject: try tokenizerParts().json) else {
            throw .invalidFile(path: path, field: "tokenizer.ggml.tokens", reason: "cannot be represented as JSON")
        }
        return data
    }

    /// A GGUF vocabulary's tokenizer in two parts: the tokenizer.json object of all but the BPE
    /// model (the splits, post-processor, decoder and added tokens: small), and that model's
    /// vocabulary and merges, typed. The tokenizer is built from them directly: a JSON round
    /// trip took 90% of a large vocabulary's load, and the vocabulary inside a JSON object
    /// (bridged and cast back entry by entry) most of the rest.
    struct TokenizerParts {
        var object: [String: Any]
        var vocab: [String: Int]
        /// The merges in rank order, each "a b" (GPT-2 style: as the file stores them), or as
        /// pairs (SentencePiece's, derived from the scores: tokenizer.json keeps them apart for
        /// pieces that hold a space).
        var merges: [String]
        var mergePairs: [(String, String)]? = nil
        var unkToken: String? = nil
        var fuseUnk = false, byteFallback = false, ignoreMerges = false

        /// The BPE model.
        var model: BPEModel {
            BPEModel(vocab: vocab, merges: mergePairs.map { $0.map { "\($0.0) \($0.1)" } } ?? merges, unkToken: unkToken,
                     fuseUnk: fuseUnk, byteFallback: byteFallback, ignoreMerges: ignoreMerges)
        }

        /// The whole tokenizer.json object, the model included.
        var json: [String: Any] {
            var j = object
            j["model"] = ["type": "BPE", "vocab": vocab, "merges": mergePairs.map { $0.map { [$0.0, $0.1] } as Any } ?? merges,
                          "dropout": NSNull(), "unk_token": unkToken.map { $0 as Any } ?? NSNull(), "fuse_unk": fuseUnk,
                          "byte_fallback": byteFallback, "ignore_merges": ignoreMerges]
            return j
        }
    }

    /// The parts of the tokenizer this file's tokenizer metadata describes; a typed error naming
    /// the key when it is missing or of a kind MoEKit does not read.
    func tokenizerParts() throws(ModelError) -> TokenizerParts {
        let m = metadata
        guard let model = m["tokenizer.ggml.model"]?.string else {
            throw .invalidFile(path: path, field: "tokenizer.ggml.model", reason: "missing: the file carries no tokenizer")
        }
        if model == "llama" { return try sentencePieceParts() }
        guard model == "gpt2" else {
            throw .invalidFile(path: path, field: "tokenizer.ggml.model",
                               reason: "'\(model)' vocabularies are not read (gpt2-style BPE and llama-style SentencePiece are)")
        }
        let pre = m["tokenizer.ggml.pre"]?.string ?? "default"
        guard let patterns = Self.preTokenizerPatterns[pre] else {
            throw .invalidFile(path: path, field: "tokenizer.ggml.pre", reason: "'\(pre)' is not supported (\(Self.preTokenizerPatterns.keys.sorted().joined(separator: ", ")) are)")
        }
        guard let tokens = m["tokenizer.ggml.tokens"]?.array?.map({ $0.string }), !tokens.contains(where: { $0 == nil }) else {
            throw .invalidFile(path: path, field: "tokenizer.ggml.tokens", reason: "missing or not strings")
        }
        let types = m["tokenizer.ggml.token_type"]?.array?.map { $0.int ?? 1 } ?? []
        let merges = (m["tokenizer.ggml.merges"]?.array ?? []).compactMap(\.string)
        var vocab: [String: Int] = [:], added: [[String: Any]] = []
        vocab.reserveCapacity(tokens.count)
        for (id, token) in tokens.enumerated() {
            guard let token else { continue }
            let type = id < types.count ? types[id] : 1
            if type == 3 || type == 4 {  // control, user-defined: matched whole in the raw text
                added.append(["id": id, "content": token, "single_word": false, "lstrip": false, "rstrip": false,
                              "normalized": false, "special": type == 3])
            }
            if vocab[token] == nil { vocab[token] = id }
        }
        let post = bosProcessor(tokens: tokens, byDefault: Self.preTokenizersAddingBOS.contains(pre))
        let splits: [[String: Any]] = patterns.map { ["type": "Split", "pattern": ["Regex": $0], "behavior": "Isolated", "invert": false] }
        let json: [String: Any] = [
            "version": "1.0", "added_tokens": added, "normalizer": NSNull(),
            "pre_tokenizer": ["type": "Sequence", "pretokenizers": splits + [["type": "ByteLevel", "add_prefix_space": false,
                                                                                "trim_offsets": false, "use_regex": false]]],
            "post_processor": post,
            "decoder": ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true],
        ]
        return TokenizerParts(object: json, vocab: vocab, merges: merges,
                              ignoreMerges: Self.preTokenizersIgnoringMerges.contains(pre))
    }

    /// `tokenizer.ggml.add_bos_token` (else `byDefault`): the BOS token in front, as a template
    /// post-processor; JSON null when none is added.
    func bosProcessor(tokens: [String?], byDefault: Bool) -> Any {
        let m = metadata
        guard m["tokenizer.ggml.add_bos_token"]?.bool ?? byDefault, let bos = m["tokenizer.ggml.bos_token_id"]?.int, bos >= 0,
              bos < tokens.count, let content = tokens[bos] else { return NSNull() }
        return ["type": "TemplateProcessing",
                "single": [["SpecialToken": ["id": content, "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]]],
                "pair": [["Sequence": ["id": "A", "type_id": 0]], ["Sequence": ["id": "B", "type_id": 1]]],
                "special_tokens": [content: ["id": content, "ids": [bos], "tokens": [content]]]]
    }

    /// A `llama` (SentencePiece) vocabulary as the tokenizer.json transformers converts it to:
    /// spaces become "▁" with one in front of the text (unless `tokenizer.ggml.add_space_prefix`
    /// is false), pieces merge by the score of the piece they make (llama.cpp's SPM tokenizer:
    /// a merge per vocabulary piece and split, ordered by score), characters outside the
    /// vocabulary fall back to `<0xXX>` byte pieces, and the BOS token leads by default.
    func sentencePieceParts() throws(ModelError) -> TokenizerParts {
        let m = metadata
        guard let tokens = m["tokenizer.ggml.tokens"]?.array?.map({ $0.string }), !tokens.contains(where: { $0 == nil }) else {
            throw .invalidFile(path: path, field: "tokenizer.ggml.tokens", reason: "missing or not strings")
        }
        guard let scores = m["tokenizer.ggml.scores"]?.array?.map({ $0.double }), scores.count == tokens.count,
              !scores.contains(where: { $0 == nil }) else {
            throw .invalidFile(path: path, field: "tokenizer.ggml.scores", reason: "missing, not numbers, or not one per token")
        }
        let types = m["tokenizer.ggml.token_type"]?.array?.map { $0.int ?? 1 } ?? []
        var vocab: [String: Int] = [:], added: [[String: Any]] = []
        vocab.reserveCapacity(tokens.count)
        for (id, token) in tokens.enumerated() {
            guard let token else { continue }
            let type = id < types.count ? types[id] : 1
            if type == 3 || type == 4 {
                added.append(["id": id, "content": token, "single_word": false, "lstrip": false, "rstrip": false,
                              "normalized": false, "special": type == 3])
            }
            if vocab[token] == nil { vocab[token] = id }
        }
        // Merges: every split of every normal piece into two pieces of the vocabulary, by the
        // piece's score (highest first), splits of one piece by their parts' ids.
        var merges: [(left: String, right: String, score: Double)] = []
        for (id, token) in tokens.enumerated() {
            guard let token, (id < types.count ? types[id] : 1) == 1 else { continue }
            let chars = Array(token.unicodeScalars)
            if chars.count < 2 { continue }
            var local: [(String, String, Int, Int)] = []
            for cut in 1..<chars.count {
                var a = String.UnicodeScalarView(), b = String.UnicodeScalarView()
                a.append(contentsOf: chars[..<cut])
                b.append(contentsOf: chars[cut...])
                let (left, right) = (String(a), String(b))
                if let l = vocab[left], let r = vocab[right] { local.append((left, right, l, r)) }
            }
            local.sort { ($0.2, $0.3) < ($1.2, $1.3) }
            merges += local.map { ($0.0, $0.1, scores[id]!) }
        }
        let ordered = merges.enumerated().sorted { $0.element.score != $1.element.score ? $0.element.score > $1.element.score : $0.offset < $1.offset }
        let prefix = m["tokenizer.ggml.add_space_prefix"]?.bool ?? true
        var normalizers: [[String: Any]] = []
        if prefix { normalizers.append(["type": "Prepend", "prepend": "▁"]) }
        normalizers.append(["type": "Replace", "pattern": ["String": " "], "content": "▁"])
        var decoders: [[String: Any]] = [["type": "Replace", "pattern": ["String": "▁"], "content": " "],
                                         ["type": "ByteFallback"], ["type": "Fuse"]]
        if prefix { decoders.append(["type": "Strip", "content": " ", "start": 1, "stop": 0]) }
        let unk = (m["tokenizer.ggml.unknown_token_id"]?.int).flatMap { $0 >= 0 && $0 < tokens.count ? tokens[$0] : nil }
        let json: [String: Any] = [
            "version": "1.0", "added_tokens": added,
            "normalizer": ["type": "Sequence", "normalizers": normalizers],
            "pre_tokenizer": NSNull(),
            "post_processor": bosProcessor(tokens: tokens, byDefault: true),
            "decoder": ["type": "Sequence", "decoders": decoders],
        ]
        return TokenizerParts(object: json, vocab: vocab, merges: [],
                              mergePairs: ordered.map { ($0.element.left, $0.element.right) }, unkToken: unk, fuseUnk: true,
                              byteFallback: true)
    }

    /// The file's tokenizer (encoding with special tokens puts the BOS token in front when
    /// `tokenizer.ggml.add_bos_token` says so, as llama.cpp does).
    public func tokenizer() throws(ModelError) -> Tokenizer {
        let parts = try tokenizerParts()
        return try Tokenizer(object: parts.object, path: path, model: parts.model)
    }
}

extension GGUFFile {
    /// Whether the GGUF file at `path` carries a tokenizer (`tokenizer.ggml.model`).
    public static func hasTokenizer(path: String) -> Bool {
        (try? GGUFFile(path: path))?.metadata["tokenizer.ggml.model"] != nil
    }
}

extension Tokenizer {
    /// The tokenizer of a model: a GGUF file's own, or a checkpoint folder's `tokenizer.json`.
    public static func of(model path: String) throws(ModelError) -> Tokenizer {
        if GGUFFile.isGGUF(path: path) { return try GGUFFile(path: path).tokenizer() }
        return try Tokenizer(path: (path as NSString).appendingPathComponent("tokenizer.json"))
    }
}
