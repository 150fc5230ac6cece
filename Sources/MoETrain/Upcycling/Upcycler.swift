import Foundation
import MoECore
import MoEModels

/// Sparse upcycling (Komatsuzaki et al.; fine-grained as Qwen1.5-MoE and DeepSeekMoE do it): a
/// dense checkpoint becomes an MoE of a supported family whose experts are copies of slices of
/// each layer's FFN, everything else copied as it is.
///
/// The FFN of intermediate size I is cut into `granularity` g slices of I/g units (SwiGLU is a
/// sum over its units, so the FFN is the sum of its slices). The first `sharedExperts` s slices
/// form a shared expert (Qwen2-MoE's layout; its sigmoid gate starts at 0, so its down
/// projection is doubled); the other r = g - s slices are copied round-robin into the `experts`
/// routed experts (expert e is slice s + e mod r of copy e / r), each down projection scaled by
/// r, behind a router drawn with std `routerStd` (0: zeros). With a zero router, no noise and a
/// `topK` that is a multiple of r, the MoE computes the dense model exactly: ties choose
/// experts 0 ..< k, which cover each routed slice k / r times with weight 1 / k each.
///
/// Layouts: Llama and Mistral become Mixtral; Qwen3 becomes Qwen3-MoE; with shared experts,
/// Llama, Mistral and Qwen2 become Qwen2-MoE (q, k, v biases as the source has them).
public enum Upcycler {
    public struct Options: Sendable {
        public var experts: Int
        public var topK: Int
        public var granularity = 1
        public var sharedExperts = 0
        /// Std of the router's uniform draw (0: zeros).
        public var routerStd: Float = 0.02
        /// Std of the uniform noise added to each expert weight, relative to the weight's own RMS.
        public var noise: Float = 0
        public var seed: UInt64 = 0
        public init(experts: Int, topK: Int) {
            self.experts = experts
            self.topK = topK
        }
    }

    /// Writes the upcycled checkpoint of the dense folder `model` to the new folder `out`
    /// (written whole or not at all). Typed errors name the option or the config field.
    public static func upcycle(model: String, options o: Options, to out: String) throws(ModelError) {
        let ck = try Checkpoint(directory: model)
        let spec = try Architectures.spec(configAt: ck.configPath)
        guard let data = FileManager.default.contents(atPath: ck.configPath),
              var config = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw .invalidFile(path: ck.configPath, field: "(json)", reason: "not a JSON object")
        }
        guard !spec.isMoE, spec.latent == nil else {
            throw .invalidConfig(path: ck.configPath, field: "model_type", reason: "\(spec.modelType) is not a dense model to upcycle")
        }
        let g = o.granularity, s = o.sharedExperts, r = g - s, width = spec.denseIntermediate / max(1, g)
        func bad(_ option: String, _ reason: String) -> ModelError { .invalidConfig(path: "moe upcycle", field: option, reason: reason) }
        guard g >= 1, spec.denseIntermediate % g == 0 else {
            throw bad("--granularity", "\(g) must divide the FFN's intermediate size \(spec.denseIntermediate)")
        }
        guard s >= 0, r >= 1 else { throw bad("--shared-experts", "\(s) must leave at least one of the \(g) slices to route") }
        guard (1...1024).contains(o.experts), o.experts % r == 0 else {
            throw bad("--experts", "\(o.experts) must be in 1...1024 and a multiple of the \(r) routed slices")
        }
        guard (1...o.experts).contains(o.topK) else { throw bad("--top-k", "\(o.topK) must be in 1...\(o.experts)") }
        guard o.routerStd >= 0, o.routerStd.isFinite, o.noise >= 0, o.noise.isFinite else {
            throw bad("--router-std", "router std and noise must be finite and not negative")
        }
        let source = spec.modelType, bias = config["attention_bias"] as? Bool ?? false
        let layout: String
        switch (source, s > 0) {
        case ("llama", false), ("mistral", false):
            guard !bias, config["mlp_bias"] as? Bool != true else {
                throw .invalidConfig(path: ck.configPath, field: "attention_bias", reason: "Mixtral has no attention or MLP biases")
            }
            layout = "mixtral"
        case ("qwen3", false): layout = "qwen3_moe"
        case ("llama", true), ("mistral", true), ("qwen2", true):
            guard source == "qwen2" || !bias, config["mlp_bias"] as? Bool != true, config["sliding_window"] == nil || config["sliding_window"] is NSNull
                    || source == "qwen2" else {
                throw .invalidConfig(path: ck.configPath, field: bias ? "attention_bias" : "sliding_window",
                                     reason: "Qwen2-MoE (the layout with a shared expert) has neither an output-projection bias nor Mistral's sliding window")
            }
            layout = "qwen2_moe"
            config["qkv_bias"] = source == "qwen2"
        case ("qwen2", false): throw bad("--shared-experts", "Qwen2-MoE, the layout for Qwen2, always has a shared expert: give at least 1")
        case ("qwen3", true): throw bad("--shared-experts", "Qwen3-MoE, the layout for Qwen3, has no shared expert")
        default: throw .invalidConfig(path: ck.configPath, field: "model_type", reason: "upcycling takes llama, mistral, qwen2 or qwen3, not \(source)")
        }
        config["model_type"] = layout
        config["architectures"] = [["mixtral": "MixtralForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM", "qwen2_moe": "Qwen2MoeForCausalLM"][layout]!]
        config["num_experts_per_tok"] = o.topK
        if layout == "mixtral" {
            config["num_local_experts"] = o.experts
            config["intermediate_size"] = width
        } else {
            config["num_experts"] = o.experts
            config["moe_intermediate_size"] = width
            config["decoder_sparse_step"] = 1
            config["mlp_only_layers"] = [Int]()
            config["norm_topk_prob"] = true
            if layout == "qwen2_moe" { config["shared_expert_intermediate_size"] = s * width }
        }
        config["output_router_logits"] = false
        config["router_aux_loss_coef"] = 0.01
        let target = try Architectures.spec(configData: (try? JSONSerialization.data(withJSONObject: config)) ?? Data(), path: out)

        // The entries are written layer by layer: each FFN matrix is read (as floats) once per layer.
        final class LayerFloats: @unchecked Sendable { var values: [String: [Float]] = [:] }  // one layer's gate, up, down
        let read = LayerFloats()
        func floats(_ name: String, _ shape: [Int]) throws(ModelError) -> [Float] {
            if let v = read.values[name] { return v }
            if read.values.count >= 3 { read.values.removeAll() }
            let v = try ck.tensor(name, shape: shape).toFloats()
            read.values[name] = v
            return v
        }
        var entries: [SafetensorsWriter.Entry] = []
        var ffnTensors = Set<String>()
        for i in 0..<spec.layers {
            let m = spec.names.denseFFN(i)
            let (gate, up, down) = ("\(m).gate_proj.weight", "\(m).up_proj.weight", "\(m).down_proj.weight")
            ffnTensors.formUnion([gate, up, down])
            let dtype = try ck.tensor(gate).dtype
            // The slices' rows of gate and up [I/g, d] and columns of down [d, I/g], as floats.
            func rows(_ name: String, _ slices: Range<Int>) throws(ModelError) -> [Float] {
                let t = try floats(name, [spec.denseIntermediate, spec.hiddenSize])
                return Array(t[(slices.lowerBound * width * spec.hiddenSize)..<(slices.upperBound * width * spec.hiddenSize)])
            }
            func columns(_ slices: Range<Int>, scale: Float) throws(ModelError) -> [Float] {
                let t = try floats(down, [spec.hiddenSize, spec.denseIntermediate]), n = slices.count * width
                var out = [Float](repeating: 0, count: spec.hiddenSize * n)
                for row in 0..<spec.hiddenSize {
                    for c in 0..<n { out[row * n + c] = scale * t[row * spec.denseIntermediate + slices.lowerBound * width + c] }
                }
                return out
            }
            func noisy(_ v: [Float], _ salt: UInt64) -> [Float] {
                guard o.noise > 0 else { return v }
                let rms = (v.reduce(0) { $0 + $1 * $1 } / Float(max(1, v.count))).squareRoot()
                let bound = o.noise * rms * Float(3).squareRoot()
                let n = Tensor(randomUniform: [v.count], in: -bound...bound, seed: o.seed &* 0x9E37_79B9 &+ salt).toFloats()
                return zip(v, n).map(+)
            }
            let router = target.names.routerWeight(i), d = spec.hiddenSize
            entries.append(.init(name: router, shape: [o.experts, d], dtype: dtype) { () throws(ModelError) in
                let bound = o.routerStd * Float(3).squareRoot()
                return o.routerStd == 0 ? Tensor(zeros: [o.experts, d]).converted(to: dtype)
                    : Tensor(randomUniform: [o.experts, d], in: -bound...bound, seed: o.seed &+ UInt64(i)).converted(to: dtype)
            })
            for e in 0..<o.experts {
                let slice = s + e % r, x = target.names.expert(i, e), salt = UInt64(i * 4096 + e) * 3
                entries.append(.init(name: x.gate, shape: [width, d], dtype: dtype) { () throws(ModelError) in
                    Tensor(shape: [width, d], values: noisy(try rows(gate, slice..<(slice + 1)), salt), dtype: dtype)
                })
                entries.append(.init(name: x.up, shape: [width, d], dtype: dtype) { () throws(ModelError) in
                    Tensor(shape: [width, d], values: noisy(try rows(up, slice..<(slice + 1)), salt + 1), dtype: dtype)
                })
                entries.append(.init(name: x.down, shape: [d, width], dtype: dtype) { () throws(ModelError) in
                    Tensor(shape: [d, width], values: noisy(try columns(slice..<(slice + 1), scale: Float(r)), salt + 2), dtype: dtype)
                })
            }
            if s > 0 {
                let sh = target.names.sharedExpert(i), w = s * width
                entries.append(.init(name: "\(sh).gate_proj.weight", shape: [w, d], dtype: dtype) { () throws(ModelError) in
                    Tensor(shape: [w, d], values: try rows(gate, 0..<s), dtype: dtype)
                })
                entries.append(.init(name: "\(sh).up_proj.weight", shape: [w, d], dtype: dtype) { () throws(ModelError) in
                    Tensor(shape: [w, d], values: try rows(up, 0..<s), dtype: dtype)
                })
                entries.append(.init(name: "\(sh).down_proj.weight", shape: [d, w], dtype: dtype) { () throws(ModelError) in
                    Tensor(shape: [d, w], values: try columns(0..<s, scale: 2), dtype: dtype)  // sigmoid(0) = 1/2
                })
                entries.append(.init(name: target.names.sharedExpertGate(i), shape: [1, d], dtype: dtype) { () throws(ModelError) in
                    Tensor(zeros: [1, d]).converted(to: dtype)
                })
            }
        }
        for name in ck.names where !ffnTensors.contains(name) {
            let t = try ck.tensor(name)
            entries.append(.init(name: name, shape: t.shape, dtype: t.dtype) { () throws(ModelError) in try ck.tensor(name) })
        }
        try CheckpointFolderWriter.write(out: out, copyingFrom: ck.directory) { (temporary: String) throws(ModelError) in
            try SafetensorsWriter.write(entries: entries, metadata: ["format": "pt"], to: (temporary as NSString).appendingPathComponent("model.safetensors"))
            guard let json = try? JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys]) else {
                throw .io(path: out, reason: "cannot encode config.json")
            }
            try AtomicFile.write(json, to: (temporary as NSString).appendingPathComponent("config.json"))
        }
    }
}
