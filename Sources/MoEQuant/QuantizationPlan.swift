import Foundation
import MoECore

/// A quantization type as `moe quantize --type` names it: llama.cpp's file types (`ftype`),
/// each a base block format plus the per-tensor mix llama-quantize applies to it.
public enum QuantizationPreset: String, CaseIterable, Sendable {
    case f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k_s, q3_k_m, q3_k_l, q4_k_s, q4_k_m, q5_k_s, q5_k_m, q6_k
    case iq4_nl, iq4_xs, mxfp4_moe

    /// llama.cpp's `general.file_type` code.
    public var fileType: UInt32 {
        switch self {
        case .f32: return 0
        case .f16: return 1
        case .q4_0: return 2
        case .q4_1: return 3
        case .q8_0: return 7
        case .q5_0: return 8
        case .q5_1: return 9
        case .q2_k: return 10
        case .q3_k_s: return 11
        case .q3_k_m: return 12
        case .q3_k_l: return 13
        case .q4_k_s: return 14
        case .q4_k_m: return 15
        case .q5_k_s: return 16
        case .q5_k_m: return 17
        case .q6_k: return 18
        case .iq4_nl: return 25
        case .iq4_xs: return 30
        case .bf16: return 32
        case .mxfp4_moe: return 38
        }
    }

    /// The type of every quantizable tensor the mix does not change.
    public var baseType: DType {
        switch self {
        case .f32: return .f32
        case .f16: return .f16
        case .bf16: return .bf16
        case .q8_0: return .q8_0
        case .q4_0: return .q4_0
        case .q4_1: return .q4_1
        case .q5_0: return .q5_0
        case .q5_1: return .q5_1
        case .q2_k: return .q2_K
        case .q3_k_s, .q3_k_m, .q3_k_l: return .q3_K
        case .q4_k_s, .q4_k_m: return .q4_K
        case .q5_k_s, .q5_k_m: return .q5_K
        case .q6_k: return .q6_K
        case .iq4_nl: return .iq4_NL
        case .iq4_xs: return .iq4_XS
        case .mxfp4_moe: return .mxfp4
        }
    }
}

/// Chooses each tensor's type for a preset as llama-quantize does (llama-quant.cpp's
/// `llama_tensor_get_type`, for the presets above, with or without an importance matrix): which
/// tensors are quantized at all, the preset's mix (Q6_K for the output and for `attn_v` and
/// `ffn_down` on some layers in *_M, Q8_0 attention for 8-expert models, Q3_K-Q5_K `ffn_down`
/// and `attn_v` in Q2_K and Q3_K_*, ...), user overrides
/// by regular expression, and the fallback when a row is not a whole number of blocks.
/// Call `type(for:)` once per tensor in the order they are written: the mix counts tensors.
public struct QuantizationPlan {
    public let preset: QuantizationPreset
    /// `--tensor-type` overrides, first match wins.
    public let overrides: [(pattern: NSRegularExpression, type: DType)]
    let layers: Int, experts: Int
    /// Attention heads per key-value head (llama.cpp's `n_gqa`; 0 when unknown), and whether
    /// llama.cpp takes the model for a 70B one (80-layer Llama with grouped keys): both move
    /// `attn_v` to more bits in some presets.
    let groupedQueries: Int, is70B: Bool
    let attentionV: Int, tiedEmbeddings: Bool
    /// Whether an importance matrix is given: Q4_0 and Q5_0 then keep the first eighth of the
    /// `ffn_down` layers in Q4_1 and Q5_1, and IQ4_NL and IQ4_XS leave it in their own type
    /// (Q5_K without one), as llama-quantize does.
    let hasImportance: Bool
    var attentionVSeen = 0, ffnDownSeen = 0

    /// A plan for the tensors `names` of a model with `layers` blocks and `experts` routed
    /// experts per MoE layer (0 or 1 for a dense model), `groupedQueries` attention heads per
    /// key-value head.
    public init(preset: QuantizationPreset, overrides: [(pattern: NSRegularExpression, type: DType)] = [],
                names: [String], layers: Int, experts: Int, groupedQueries: Int = 1, is70B: Bool = false,
                hasImportance: Bool = false) {
        self.hasImportance = hasImportance
        self.groupedQueries = groupedQueries
        self.is70B = is70B
        self.preset = preset
        self.overrides = overrides
        self.layers = layers
        self.experts = max(1, experts)
        attentionV = names.filter { Self.isAttentionV($0) }.count
        tiedEmbeddings = !names.contains("output.weight")
    }

    /// The heads' part of llama.cpp's view of a model: attention heads per key-value head
    /// (`n_gqa`, 0 without key-value heads) and whether it takes the model for a 70B one (an
    /// 80-layer GGUF `llama` with grouped keys).
    public static func attentionShape(architecture: String, layers: Int, heads: Int, kvHeads: Int)
        -> (groupedQueries: Int, is70B: Bool) {
        (kvHeads > 0 ? heads / kvHeads : 0, architecture == "llama" && layers == 80 && heads != kvHeads)
    }

    static func isAttentionV(_ name: String) -> Bool {
        name.contains("attn_qkv.weight") || name.contains("attn_kv_b.weight") || name.contains("attn_v.weight")
    }

    /// Whether llama-quantize would quantize this tensor at all (else it is copied as stored).
    public static func isQuantizable(name: String, rank: Int) -> Bool {
        rank >= 2 && name.hasSuffix("weight") && !name.contains("_norm.weight") && !name.contains("ffn_gate_inp.weight")
    }

    /// llama.cpp's tensors that get more bits in the *_M mixes: the first and last eighth of
    /// the layers, and every third one between.
    static func usesMoreBits(_ i: Int, _ n: Int) -> Bool {
        i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
    }

    /// The layer index in a `blk.N.` name.
    static func layer(of name: String) -> Int? {
        guard name.hasPrefix("blk.") else { return nil }
        return Int(name.dropFirst(4).prefix { $0.isNumber })
    }

    /// The type tensor `name` (row-major `shape`, stored as `stored`) is written in.
    public mutating func type(for name: String, shape: [Int], stored: DType) -> DType {
        guard Self.isQuantizable(name: name, rank: shape.count) else { return stored }
        var type = preset.baseType
        if type.isElementFormat { return type }
        let range = NSRange(name.startIndex..., in: name)
        if let manual = overrides.first(where: { $0.pattern.firstMatch(in: name, range: range) != nil }) {
            type = manual.type
        } else {
            type = mixed(name: name, shape: shape, type: type)
        }
        return Self.fallback(type, columns: shape.last ?? 0)
    }

    /// The preset's mix (`llama_tensor_get_type_impl`).
    mutating func mixed(name: String, shape: [Int], type base: DType) -> DType {
        var type = base
        let columns = shape.last ?? 0
        if name == "output.weight" || (tiedEmbeddings && name == "token_embd.weight") {
            if preset == .mxfp4_moe || columns % type.blockElements != 0 { return .q8_0 }
            return type == .q8_0 ? type : .q6_K
        }
        if preset == .mxfp4_moe { return shape.count == 3 && shape[0] > 1 ? .mxfp4 : .q8_0 }
        if name == "token_embd.weight" || name == "per_layer_token_embd.weight" { return type }
        if Self.isAttentionV(name) {
            switch preset {
            case .q2_k: type = groupedQueries >= 4 ? .q4_K : .q3_K
            case .q3_k_m: type = attentionVSeen < 2 ? .q5_K : .q4_K
            case .q3_k_l: type = .q5_K
            case .iq4_nl, .iq4_xs: if groupedQueries >= 4 { type = .q5_K }
            case .q4_k_m, .q5_k_m: if Self.usesMoreBits(attentionVSeen, attentionV) { type = .q6_K }
            case .q4_k_s: if attentionVSeen < 4 { type = .q5_K }
            default: break
            }
            if is70B && (type == .q3_K || type == .q4_K) { type = .q5_K }
            if experts == 8 { type = .q8_0 }
            attentionVSeen += 1
        } else if name.contains("attn_k.weight") {
            if experts == 8 { type = .q8_0 }
        } else if name.contains("attn_q.weight") {
        } else if name.contains("attn_output.weight") {
            if experts == 8 {
                if [.q2_k, .q3_k_s, .q3_k_m, .iq4_nl, .q4_k_s, .q4_k_m, .iq4_xs].contains(preset) { type = .q5_K }
            } else {
                switch preset {
                case .q2_k: type = .q3_K
                case .q3_k_m: type = .q4_K
                case .q3_k_l: type = .q5_K
                default: break
                }
            }
        } else if name.contains("ffn_up") || name.contains("ffn_gate") {
        } else if name.contains("ffn_down") {
            let i = experts > 1 ? (Self.layer(of: name) ?? ffnDownSeen) : ffnDownSeen
            switch preset {
            case .q2_k: type = .q3_K
            case .q3_k_m: type = i < layers / 16 ? .q5_K : .q4_K
            case .q3_k_l: type = .q5_K
            case .q4_k_m: if Self.usesMoreBits(i, layers) { type = .q6_K }
            case .iq4_nl, .iq4_xs: if i < layers / 8 && !hasImportance { type = .q5_K }
            case .q5_k_m: if Self.usesMoreBits(i, layers) { type = .q6_K }
            case .q4_k_s: if i < layers / 8 { type = .q5_K }
            case .q4_0, .q5_0: if hasImportance && i < layers / 8 { type = preset == .q4_0 ? .q4_1 : .q5_1 }
            default: break
            }
            ffnDownSeen += 1
        }
        return type
    }

    /// llama.cpp's fallback for rows that are not a whole number of the type's blocks.
    static func fallback(_ type: DType, columns: Int) -> DType {
        if columns % type.blockElements == 0 { return type }
        let next: DType
        switch type {
        case .q2_K, .q3_K: next = .q4_0
        case .q4_K: next = .q5_0
        case .q5_K: next = .q5_1
        case .q6_K: next = .q8_0
        case .iq4_XS: next = .iq4_NL
        default: next = type
        }
        return columns % next.blockElements == 0 ? next : .f16
    }

    /// llama.cpp's tensor order in the files it writes: tensors outside the blocks first, then
    /// block by block, by name within each (`weight_name_comparer`).
    public static func fileOrder(_ names: [String]) -> [String] {
        names.sorted { a, b in
            let (la, lb) = (layer(of: a) ?? -1, layer(of: b) ?? -1)
            return la != lb ? la < lb : a.utf8.lexicographicallyPrecedes(b.utf8)
        }
    }
}
