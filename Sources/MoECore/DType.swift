import _MoEKernels

/// The element type of a tensor's storage.
///
/// Weights stay in the dtype they were stored in; kernels widen them to `f32` in registers and
/// accumulate in `f32`. Activations are `f32`. Raw values match the C kernels' `moek_dtype`.
public enum DType: Int, Sendable, CaseIterable, CustomStringConvertible {
    case f32 = 0
    case f16 = 1
    case bf16 = 2
    /// ggml's block formats (byte layouts as ggml-common.h; `dequant.c` in the C target):
    /// 32 elements per block for the first seven, 256 for the k-quants and IQ4_XS.
    case q8_0 = 16, q4_0 = 17, q4_1 = 18, q5_0 = 19, q5_1 = 20
    case q2_K = 21, q3_K = 22, q4_K = 23, q5_K = 24, q6_K = 25
    case iq4_NL = 26, iq4_XS = 27, mxfp4 = 28

    /// The element formats, which every kernel reads (the block formats' fused kernels are to come).
    public static let elementFormats: [DType] = [.f32, .f16, .bf16]

    /// Whether every element has its own fixed-size storage (f32, f16, bf16), as opposed to a
    /// block format.
    public var isElementFormat: Bool { rawValue < 16 }

    /// Bytes per element of an element format (f32, f16, bf16); for a block format, its
    /// block's bytes per element rounded up (use `storageBytes(elements:)` for sizes).
    public var byteSize: Int { isElementFormat ? (self == .f32 ? 4 : 2) : (blockBytes + blockElements - 1) / blockElements }

    /// Storage is counted in blocks: a block holds `blockElements` elements in `blockBytes`
    /// bytes, scales included (1 element of `byteSize` bytes for the element formats; Q8_0's
    /// 32 in 34 bytes and the like for the block formats). Every byte size in MoECore goes
    /// through `storageBytes(elements:)`.
    public var blockElements: Int { Int(moek_block_elements(cValue)) }
    public var blockBytes: Int { Int(moek_block_bytes(cValue)) }

    /// Bytes that `n` elements take (n a whole number of blocks; a partial block is rounded up).
    public func storageBytes(elements n: Int) -> Int { (n + blockElements - 1) / blockElements * blockBytes }

    /// The lower-case name used in JSON and on the command line ("f32", "bf16", "q4_k", ...).
    public var description: String {
        switch self {
        case .f32: return "f32"
        case .f16: return "f16"
        case .bf16: return "bf16"
        case .q8_0: return "q8_0"
        case .q4_0: return "q4_0"
        case .q4_1: return "q4_1"
        case .q5_0: return "q5_0"
        case .q5_1: return "q5_1"
        case .q2_K: return "q2_k"
        case .q3_K: return "q3_k"
        case .q4_K: return "q4_k"
        case .q5_K: return "q5_k"
        case .q6_K: return "q6_k"
        case .iq4_NL: return "iq4_nl"
        case .iq4_XS: return "iq4_xs"
        case .mxfp4: return "mxfp4"
        }
    }

    /// Parses a name from `description` (any case), or the safetensors spellings "F32", "F16",
    /// "BF16" and "float32", "float16", "half", "bfloat16".
    public init?(name: String) {
        switch name.lowercased() {
        case "float32": self = .f32
        case "float16", "half": self = .f16
        case "bfloat16": self = .bf16
        case let n:
            guard let match = DType.allCases.first(where: { $0.description == n }) else { return nil }
            self = match
        }
    }

    var cValue: Int32 { Int32(rawValue) }
}
