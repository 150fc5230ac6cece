import Foundation
import MoECore

extension GGUFConverter {
    /// A checkpoint's tokenizer.json as llama.cpp's `tokenizer.ggml.*` keys, for byte-level BPE
    /// vocabularies (GPT-2, Qwen, Llama 3, DeepSeek, OLMo): the tokens by id (gaps filled with
    /// `[PAD<id>]` as llama.cpp's converter does), their types (control for special added tokens,
    /// user-defined for the other added ones), the merges, the pre-tokenizer named by the split
    /// regex it uses, BOS/EOS, whether BOS leads, and the chat template. No tokenizer.json: no keys (the file then
    /// runs from token ids only). Other kinds are a typed error naming the field.
    static func tokenizerRecords(directory: String, spec: DecoderSpec) throws(ModelError) -> [GGUFWriter.Record] {
        let path = (directory as NSString).appendingPathComponent("tokenizer.json")
        guard let data = FileManager.default.contents(atPath: path) else { return [] }
        guard let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              let model = json["model"] as? [String: Any], let vocab = model["vocab"] as? [String: Int] else {
            throw .invalidFile(path: path, field: "model.vocab", reason: "missing or not {token: id}")
        }
        guard (model["type"] as? String ?? "BPE") == "BPE", !(model["byte_fallback"] as? Bool ?? false) else {
            throw .invalidFile(path: path, field: "model", reason: "only byte-level BPE vocabularies are written to GGUF yet")
        }
        let pre = try preTokenizerName(json["pre_tokenizer"], path: path)
        let added = (json["added_tokens"] as? [[String: Any]]) ?? []
        let size = max(spec.vocabSize, (vocab.values.max() ?? -1) + 1, (added.compactMap { $0["id"] as? Int }.max() ?? -1) + 1)
        guard size <= 1 << 24 else { throw .invalidFile(path: path, field: "model.vocab", reason: "\(size) tokens is too many") }
        var tokens = (0..<size).map { "[PAD\($0)]" }, types = [Int32](repeating: 1, count: size)
        for (token, id) in vocab where id >= 0 && id < size { tokens[id] = token }
        for item in added {
            guard let id = item["id"] as? Int, id >= 0, id < size, let content = item["content"] as? String else { continue }
            tokens[id] = content
            types[id] = (item["special"] as? Bool ?? false) ? 3 : 4
        }
        for id in 0..<size where tokens[id] == "[PAD\(id)]" && vocab["[PAD\(id)]"] == nil { types[id] = 5 }  // unused
        let merges: [String] = ((model["merges"] as? [Any]) ?? []).compactMap { m in
            if let s = m as? String { return s }
            if let pair = m as? [String], pair.count == 2 { return "\(pair[0]) \(pair[1])" }
            return nil
        }
        var r: [GGUFWriter.Record] = [
            .value(key: "tokenizer.ggml.model", .string("gpt2")), .value(key: "tokenizer.ggml.pre", .string(pre)),
            .value(key: "tokenizer.ggml.tokens", .stringArray(tokens)), .value(key: "tokenizer.ggml.token_type", .i32Array(types)),
            .value(key: "tokenizer.ggml.merges", .stringArray(merges)),
        ]
        if let bos = spec.bosTokenID { r.append(.value(key: "tokenizer.ggml.bos_token_id", .u32(UInt32(bos)))) }
        if let eos = spec.eosTokenIDs.first { r.append(.value(key: "tokenizer.ggml.eos_token_id", .u32(UInt32(eos)))) }
        let post = json["post_processor"] as? [String: Any]
        let addsBOS = (post?["type"] as? String) == "TemplateProcessing"
            && ((post?["single"] as? [[String: Any]])?.first?["SpecialToken"] != nil)
        r.append(.value(key: "tokenizer.ggml.add_bos_token", .bool(addsBOS)))
        if let chat = try ChatFormat.of(model: directory) {
            r.append(.value(key: "tokenizer.chat_template", .string(chat.template.source)))
        }
        return r
    }

    /// llama.cpp's name (`tokenizer.ggml.pre`) for a tokenizer.json pre-tokenizer: GPT-2's
    /// byte-level split, or a Split by one of the regexes `GGUFFile.preTokenizerPatterns` knows.
    static func preTokenizerName(_ value: Any?, path: String) throws(ModelError) -> String {
        guard let pre = value as? [String: Any] else { return "gpt-2" }
        if pre["type"] as? String == "ByteLevel" { return "gpt-2" }
        let steps = (pre["type"] as? String == "Sequence" ? pre["pretokenizers"] as? [[String: Any]] : [pre]) ?? []
        let patterns = steps.compactMap { ($0["pattern"] as? [String: Any])?["Regex"] as? String }
        // Every split the reader knows, under the name llama.cpp's converter gives it (GLM-4's
        // is Llama 3's pattern, written as llama-bpe).
        for name in ["qwen2", "llama-bpe", "deepseek-v3", "deepseek-llm", "gpt-4o", "tekken", "gpt-2"]
        where GGUFFile.preTokenizerPatterns[name] == patterns {
            return name
        }
        throw .invalidFile(path: path, field: "pre_tokenizer",
                           reason: "its split is not one llama.cpp names (GPT-2, Qwen2, Llama 3, DeepSeek-LLM, DeepSeek-V3, GPT-4o, Tekken)")
    }
}
