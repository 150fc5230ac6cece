import Foundation
import MoECore

/// A LoRA adapter as PEFT saves one: a folder with `adapter_config.json` (`peft_type` LORA,
/// `r`, `lora_alpha`, `use_rslora`, `rank_pattern`, `alpha_pattern`, `target_modules`) and
/// `adapter_model.safetensors`, whose tensors `base_model.model.<module>.lora_A.weight` [r, in]
/// and `.lora_B.weight` [out, r] (`lora_embedding_A` [r, vocab] and `lora_embedding_B` [d, r]
/// for an embedding) add `scale · B A` to the module's weight, scale = alpha / r (alpha / √r
/// with rsLoRA). Adapters on transformers 5's stacked expert tensors (`target_parameters`:
/// `mlp.experts.gate_up_proj`, `mlp.experts.down_proj`) are split per expert
/// (`StackedExpertLoRA`). What PEFT can save but this does not apply (DoRA, `fan_in_fan_out`, full
/// `modules_to_save` copies, bias training) is refused with the field named, never ignored.
public final class LoRAAdapterFolder: @unchecked Sendable {
    /// The folder.
    public let path: String
    /// One adapted module: its Hugging Face name (`model.layers.0.self_attn.q_proj`), A and B,
    /// and the scale its rank and alpha give.
    public struct Module: Sendable {
        public let name: String
        public let a: Tensor, b: Tensor
        public let scale: Float
        /// Whether it adapts an embedding (its delta is `(B A)ᵀ`, [vocab, d]).
        public let isEmbedding: Bool
    }
    /// Every adapted module by name.
    public let modules: [String: Module]
    /// A mixture of LoRA experts on a dense FFN (`moe train` with `lora.kind` `mixlora` or
    /// `mole`; peft_type MIXLORA): a router [E, d] (and bias [E]) picking top-k of a softmax,
    /// renormalised, and per expert the adapters of the FFN's gate, up and down projections.
    public struct Mixture: Sendable {
        /// The FFN's module name (`model.layers.0.mlp`).
        public let module: String
        public let router: Tensor, routerBias: Tensor?
        public let topK: Int
        /// Per expert: its gate_proj, up_proj and down_proj adapters (nil: that projection has none).
        public let gate: [Module?], up: [Module?], down: [Module?]
    }
    /// The mixtures by FFN module name (empty for a plain LoRA adapter).
    public let mixtures: [String: Mixture]
    /// The adapters on stacked expert tensors (`target_parameters`), per layer and tensor.
    public let stacked: [StackedExpertLoRA]
    /// Base weights the adapter carries whole (`<module>.base_layer.weight`, which PEFT saves
    /// beside an embedding's LoRA and loads over the model's), by module name.
    public let replacements: [String: Tensor]

    /// Reads the adapter in folder `path`; every size is checked before use.
    public init(path: String) throws(ModelError) {
        self.path = path
        let configPath = (path as NSString).appendingPathComponent("adapter_config.json")
        let weightsPath = (path as NSString).appendingPathComponent("adapter_model.safetensors")
        guard let data = FileManager.default.contents(atPath: configPath) else {
            throw .io(path: configPath, reason: "cannot read (a PEFT adapter folder holds adapter_config.json and adapter_model.safetensors)")
        }
        guard let config = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw .invalidFile(path: configPath, field: "(json)", reason: "is not a JSON object")
        }
        func field<T>(_ key: String, _ type: T.Type) throws(ModelError) -> T? {
            guard let v = config[key], !(v is NSNull) else { return nil }
            guard let t = v as? T else { throw .invalidFile(path: configPath, field: key, reason: "has the wrong type") }
            return t
        }
        let type = try field("peft_type", String.self)?.uppercased() ?? "LORA"
        guard type == "LORA" || type == "MIXLORA" else {
            throw .invalidFile(path: configPath, field: "peft_type", reason: "is \(type); MoEKit applies LORA adapters (and its own MIXLORA)")
        }
        if try field("use_dora", Bool.self) == true { throw .invalidFile(path: configPath, field: "use_dora", reason: "DoRA adapters are not supported") }
        if try field("fan_in_fan_out", Bool.self) == true {
            throw .invalidFile(path: configPath, field: "fan_in_fan_out", reason: "is for GPT-2's Conv1D layers, which no supported family has")
        }
        if let saved = try field("modules_to_save", [Any].self), !saved.isEmpty {
            throw .invalidFile(path: configPath, field: "modules_to_save", reason: "full module copies are not supported; only LoRA deltas")
        }
        for key in ["layer_replication", "trainable_token_indices", "alora_invocation_tokens"] where try field(key, Any.self) != nil {
            throw .invalidFile(path: configPath, field: key, reason: "is set; MoEKit applies plain LoRA deltas only")
        }
        for key in ["lora_bias", "use_qalora", "use_bdlora"] where try field(key, Bool.self) == true {
            throw .invalidFile(path: configPath, field: key, reason: "is set; MoEKit applies plain LoRA deltas only")
        }
        if let bias = try field("bias", String.self), bias != "none" {
            throw .invalidFile(path: configPath, field: "bias", reason: "is \(bias); only adapters without trained biases are supported")
        }
        let alpha = try field("lora_alpha", Double.self) ?? 8
        let rsLoRA = try field("use_rslora", Bool.self) ?? false
        let alphaPattern = try field("alpha_pattern", [String: Double].self) ?? [:]

        let file = try SafetensorsFile(path: weightsPath)
        var pairs: [String: (a: String?, b: String?, embedding: Bool)] = [:]
        var replacements: [String: Tensor] = [:], routers: [String: (weight: Tensor?, bias: Tensor?)] = [:]
        for name in file.entries.keys.sorted() {
            for part in ["weight", "bias"] where name.hasPrefix("base_model.model.") && name.hasSuffix(".lora_router.\(part)") {
                let module = String(name.dropFirst("base_model.model.".count).dropLast(".lora_router.\(part)".count))
                if part == "weight" { routers[module, default: (nil, nil)].weight = try file.tensor(name) }
                else { routers[module, default: (nil, nil)].bias = try file.tensor(name) }
            }
            if name.hasSuffix(".lora_router.weight") || name.hasSuffix(".lora_router.bias") { continue }
            // base_model.model.<module>.lora_A[.default].weight, <module>.lora_embedding_A[.default],
            // or <module>.base_layer.weight (the base weight itself, saved beside an embedding's LoRA).
            guard name.hasPrefix("base_model.model.") else {
                throw .invalidFile(path: weightsPath, field: name, reason: "is not a LoRA tensor (base_model.model.<module>.lora_A.weight)")
            }
            var key = String(name.dropFirst("base_model.model.".count))
            if key.hasSuffix(".base_layer.weight") {
                replacements[String(key.dropLast(".base_layer.weight".count))] = try file.tensor(name)
                continue
            }
            if key.hasSuffix(".weight") { key = String(key.dropLast(".weight".count)) }
            if key.hasSuffix(".default") { key = String(key.dropLast(".default".count)) }
            let parts = key.split(separator: ".")
            guard parts.count >= 2, let last = parts.last else {
                throw .invalidFile(path: weightsPath, field: name, reason: "is not a LoRA tensor")
            }
            let module = parts.dropLast().joined(separator: ".")
            switch last {
            case "lora_A": pairs[module, default: (nil, nil, false)].a = name
            case "lora_B": pairs[module, default: (nil, nil, false)].b = name
            case "lora_embedding_A": pairs[module, default: (nil, nil, true)].a = name; pairs[module]?.embedding = true
            case "lora_embedding_B": pairs[module, default: (nil, nil, true)].b = name; pairs[module]?.embedding = true
            default: throw .invalidFile(path: weightsPath, field: name, reason: "is not a LoRA A or B tensor")
            }
        }
        self.replacements = replacements
        guard !pairs.isEmpty else { throw .invalidFile(path: weightsPath, field: "(tensors)", reason: "holds no LoRA tensors") }
        guard type == "MIXLORA" || routers.isEmpty else {
            throw .invalidFile(path: configPath, field: "peft_type", reason: "is LORA, but the tensors hold a mixture's router")
        }
        let targetParameters = try field("target_parameters", [String].self) ?? []
        stacked = try Self.stackedAdapters(&pairs, targets: targetParameters, file: file, configPath: configPath, weightsPath: weightsPath,
                                           rank: try field("r", Int.self) ?? 8, rankPattern: try field("rank_pattern", [String: Double].self) ?? [:],
                                           alpha: alpha, alphaPattern: alphaPattern, rsLoRA: rsLoRA)
        var modules: [String: Module] = [:]
        for (module, pair) in pairs {
            guard let aName = pair.a, let bName = pair.b else {
                throw .invalidFile(path: weightsPath, field: module, reason: "has \(pair.a == nil ? "no A" : "no B") tensor")
            }
            let a = try file.tensor(aName), b = try file.tensor(bName)
            // A [r, in] and B [out, r] (an embedding's A [r, vocab], B [d, r]).
            guard a.rank == 2, b.rank == 2, a.shape[0] == b.shape[1], a.shape[0] > 0 else {
                throw .invalidFile(path: weightsPath, field: bName, reason: "shape \(b.shape) does not match A's \(a.shape)")
            }
            let rank = Double(a.shape[0])
            let moduleAlpha = Self.patternValue(alphaPattern, module: module) ?? alpha
            let scale = Float(rsLoRA ? moduleAlpha / rank.squareRoot() : moduleAlpha / rank)
            modules[module] = Module(name: module, a: a, b: b, scale: scale, isEmbedding: pair.embedding)
        }
        var mixtures: [String: Mixture] = [:]
        if type == "MIXLORA" {
            let topK = try field("top_k", Int.self) ?? 2
            for (module, router) in routers {
                guard let weight = router.weight, weight.rank == 2, (1...256).contains(weight.shape[0]), topK >= 1, topK <= weight.shape[0] else {
                    throw .invalidFile(path: weightsPath, field: "base_model.model.\(module).lora_router.weight",
                                       reason: "missing, or not [experts, d] with 1 <= top_k (\(topK)) <= experts <= 256")
                }
                let e = weight.shape[0]
                if let bias = router.bias, bias.shape != [e] {
                    throw .invalidFile(path: weightsPath, field: "base_model.model.\(module).lora_router.bias", reason: "shape \(bias.shape), expected [\(e)]")
                }
                func experts(_ projection: String) -> [Module?] {
                    (0..<e).map { modules.removeValue(forKey: "\(module).lora_experts.\($0).\(projection)") }
                }
                mixtures[module] = Mixture(module: module, router: weight, routerBias: router.bias, topK: topK,
                                           gate: experts("gate_proj"), up: experts("up_proj"), down: experts("down_proj"))
            }
            if let stray = modules.keys.sorted().first(where: { $0.contains(".lora_experts.") }) {
                throw .invalidFile(path: weightsPath, field: stray, reason: "is a LoRA expert of no router in the adapter")
            }
        }
        self.modules = modules
        self.mixtures = mixtures
    }

    /// Takes the pairs PEFT's `target_parameters` wrappers saved (`<experts>[.base_layer].lora_A`)
    /// out of `pairs` and splits each into per-expert adapters; each target must be a stacked
    /// expert tensor (`gate_up_proj`, `down_proj`), each wrapper's A [r·E, in] and B [out, r·E].
    static func stackedAdapters(_ pairs: inout [String: (a: String?, b: String?, embedding: Bool)], targets: [String], file: SafetensorsFile,
                                configPath: String, weightsPath: String, rank: Int, rankPattern: [String: Double], alpha: Double,
                                alphaPattern: [String: Double], rsLoRA: Bool) throws(ModelError) -> [StackedExpertLoRA] {
        guard !targets.isEmpty else { return [] }
        let known = StackedExpertLoRA.Parameter.allCases.map(\.rawValue)
        if let bad = targets.first(where: { t in !known.contains { t == $0 || t.hasSuffix("." + $0) } }) {
            throw .invalidFile(path: configPath, field: "target_parameters",
                               reason: "'\(bad)' is not a stacked expert tensor MoEKit adapts (mlp.experts.gate_up_proj, mlp.experts.down_proj)")
        }
        var out: [StackedExpertLoRA] = []
        for wrapper in pairs.keys.sorted() {
            var module = wrapper, depth = 0
            while module.hasSuffix(".base_layer") { module = String(module.dropLast(".base_layer".count)); depth += 1 }
            guard let layer = StackedExpertLoRA.layer(ofModule: module), let pair = pairs.removeValue(forKey: wrapper) else { continue }
            let targeted = StackedExpertLoRA.Parameter.allCases.filter { p in
                targets.contains { "\(module).\(p.rawValue)" == $0 || "\(module).\(p.rawValue)".hasSuffix("." + $0) }
            }
            let field = "base_model.model.\(wrapper).lora_A.weight"
            guard depth < targeted.count else {
                throw .invalidFile(path: weightsPath, field: field, reason: "is a wrapper \(depth) deep, but target_parameters names \(targeted.count) tensor(s) of \(module)")
            }
            let parameter = targeted[targeted.count - 1 - depth], key = "\(module).\(parameter.rawValue)"
            guard let aName = pair.a, let bName = pair.b, !pair.embedding else {
                throw .invalidFile(path: weightsPath, field: field, reason: "\(key) needs both lora_A and lora_B")
            }
            let r = Int(patternValue(rankPattern, module: key) ?? Double(rank))
            let a = try file.tensor(aName), b = try file.tensor(bName)
            guard r > 0, a.rank == 2, b.rank == 2, a.shape[0] % r == 0, let split = StackedExpertLoRA.split(a: a, b: b, experts: a.shape[0] / r) else {
                throw .invalidFile(path: weightsPath, field: bName, reason: "A \(a.shape) and B \(b.shape) are not rank \(r) times a number of experts")
            }
            let moduleAlpha = patternValue(alphaPattern, module: key) ?? alpha
            let scale = Float(rsLoRA ? moduleAlpha / Double(r).squareRoot() : moduleAlpha / Double(r))
            out.append(StackedExpertLoRA(layer: layer, parameter: parameter, a: split.a, b: split.b, scale: scale))
        }
        return out
    }

    /// PEFT's per-module override: the value of the first key (sorted) that names the module
    /// or its dotted suffix, as PEFT's `(.*\.)?key$` match does.
    static func patternValue(_ pattern: [String: Double], module: String) -> Double? {
        for key in pattern.keys.sorted() where module == key || module.hasSuffix("." + key) { return pattern[key] }
        return nil
    }

    /// `scale · B A` as f32 [out, in], for B [out, r] and A [r, in] in any element dtype.
    static func product(b: Tensor, a: Tensor, scale: Float, pool: ThreadPool) -> Tensor {
        // B A = B (Aᵀ)ᵀ: matmul takes x [M, K] and W [N, K]; here x = B [out, r], W = Aᵀ [in, r].
        let r = a.shape[0], n = a.shape[1], av = a.toFloats()
        var at = [Float](repeating: 0, count: n * r)
        for i in 0..<r { for j in 0..<n { at[j * r + i] = av[i * n + j] * scale } }
        let bf = b.dtype == .f32 ? b : Tensor(shape: b.shape, values: b.toFloats())
        return Kernels.matmul(bf, Tensor(shape: [n, r], values: at), pool: pool)
    }

    /// `scale · B A` for `module` as f32 [out, in] (an embedding's transposed to [vocab, d]).
    public func delta(_ module: Module, pool: ThreadPool = .shared) -> Tensor {
        let product = Self.product(b: module.b, a: module.a, scale: module.scale, pool: pool)  // [out, in]
        guard module.isEmbedding else { return product }
        let rows = product.shape[0], cols = product.shape[1], p = product.toFloats()
        var t = [Float](repeating: 0, count: rows * cols)
        for i in 0..<rows { for j in 0..<cols { t[j * rows + i] = p[i * cols + j] } }
        return Tensor(shape: [cols, rows], values: t)
    }
}
