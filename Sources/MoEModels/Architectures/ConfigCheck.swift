/// Upper bounds on the sizes a config.json may bring. Each is far above any published model
/// (DeepSeek-V3: hidden 7168, 61 layers, 256 experts, vocabulary 129,280; GPT-OSS-120B: 128
/// experts; Llama-3-405B: hidden 16,384, 126 layers) and low enough that every product the
/// model forms of them stays inside `Int` before `DecoderSpec.checkSizes` bounds the total.
enum ConfigLimits {
    static let layers = 4096
    static let width = 1 << 17            // hidden sizes, intermediate sizes, LoRA ranks
    static let vocabulary = 1 << 24
    static let heads = 4096
    static let headDim = 1 << 14
    static let experts = 1 << 16
    /// Weights in the whole model: 2^42 (4.4 T) parameters.
    static let parameters = 1 << 42
}

/// Range checks for config.json fields, each failure a `ModelError.invalidConfig` naming the
/// file and the field.
struct ConfigCheck {
    let path: String

    /// A size in 1...max.
    func size(_ value: Int, _ field: String, max: Int) throws(ModelError) -> Int {
        guard value >= 1, value <= max else {
            throw .invalidConfig(path: path, field: field, reason: "must be in 1...\(max), got \(value)")
        }
        return value
    }

    /// A count in 0...max.
    func count(_ value: Int, _ field: String, max: Int) throws(ModelError) -> Int {
        guard value >= 0, value <= max else {
            throw .invalidConfig(path: path, field: field, reason: "must be in 0...\(max), got \(value)")
        }
        return value
    }

    /// A finite real in `range`.
    func real(_ value: Double, _ field: String, _ range: ClosedRange<Double>) throws(ModelError) -> Double {
        guard value.isFinite, range.contains(value) else {
            throw .invalidConfig(path: path, field: field, reason: "must be in \(range.lowerBound)...\(range.upperBound), got \(value)")
        }
        return value
    }

    /// Layer indices (`mlp_only_layers`) each in 0..<layers.
    func layerList(_ values: [Int], _ field: String, layers: Int) throws(ModelError) -> Set<Int> {
        for v in values where v < 0 || v >= layers {
            throw .invalidConfig(path: path, field: field, reason: "layer \(v) is outside 0..<\(layers)")
        }
        return Set(values)
    }

    /// The MoE routing sizes: experts and k with 1 <= k <= experts.
    func routing(experts: Int, _ expertsField: String, k: Int, _ kField: String = "num_experts_per_tok") throws(ModelError) -> (Int, Int) {
        let e = try size(experts, expertsField, max: ConfigLimits.experts)
        guard k >= 1, k <= e else { throw .invalidConfig(path: path, field: kField, reason: "need 1 <= k <= \(e) experts, got \(k)") }
        return (e, k)
    }
}

extension DecoderSpec {
    /// Bounds the whole model's weight count (`ConfigLimits.parameters`) with overflow-checked
    /// arithmetic, so no size product formed later can trap or ask for an impossible allocation.
    func checkSizes(path: String) throws(ModelError) {
        func mul(_ a: Int, _ b: Int) -> Int? {
            let (r, o) = a.multipliedReportingOverflow(by: b)
            return o ? nil : r
        }
        func add(_ a: Int?, _ b: Int?) -> Int? {
            guard let a, let b else { return nil }
            let (r, o) = a.addingReportingOverflow(b)
            return o ? nil : r
        }
        let d = hiddenSize
        var perLayer: Int? = mul(d, 2)
        if let l = latent {
            let kd = l.nopeDim + l.ropeDim
            let q = l.qLoraRank.map { r in add(mul(r, d), mul(r, mul(heads, kd) ?? Int.max)) } ?? mul(d, mul(heads, kd) ?? Int.max)
            perLayer = add(perLayer, add(q, add(mul(l.kvLoraRank + l.ropeDim, d), add(mul(mul(heads, l.nopeDim + l.valueDim) ?? Int.max, l.kvLoraRank),
                                                                                       mul(d, mul(heads, l.valueDim) ?? Int.max)))))
        } else {
            perLayer = add(perLayer, mul(d, mul(2 * heads + 2 * kvHeads, headDim) ?? Int.max))
        }
        let expertWeights = mul(mul(experts, 3) ?? Int.max, mul(d, expertIntermediate) ?? Int.max)
        let shared = mul(3 * d, (sharedExpertIntermediate ?? 0) + sharedExperts * expertIntermediate)
        let dense = mul(3 * d, denseIntermediate)
        var total = mul(2 * vocabSize, d)
        for i in 0..<layers {
            total = add(total, perLayer)
            total = add(total, moeLayers[i] ? add(expertWeights, shared) : dense)
        }
        guard let total, total >= 0, total <= ConfigLimits.parameters else {
            throw .invalidConfig(path: path, field: "(sizes)", reason: "the model would have more than \(ConfigLimits.parameters) weights")
        }
    }
}
