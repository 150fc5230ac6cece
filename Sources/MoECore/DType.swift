import _MoEKernels

/// The element type of a tensor's storage.
///
/// Weights stay in the dtype they were stored in; kernels widen them to `f32` in registers and
/// accumulate in `f32`. Activations are `f32`. Raw values match the C kernels' `moek_dtype`.
public enum DType: Int, Sendable, CaseIterable, CustomStringConvertible {
    case f32 = 0
    case f16 = 1
    case bf16 = 2

    /// Bytes per element of an element format (f32, f16, bf16).
    public var byteSize: Int { self == .f32 ? 4 : 2 }

    /// Storage is counted in blocks: a block holds `blockElements` elements in `blockBytes`
    /// bytes, scales included (1 element of `byteSize` bytes for the element formats; the
    /// quantized block formats, Q8_0's 32 in 34 bytes and the like, count the same way). Every
    /// byte size in MoECore goes through `storageBytes(elements:)`.
    public var blockElements: Int { 1 }
    public var blockBytes: Int { byteSize }

    /// Bytes that `n` elements take (n a whole number of blocks; a partial block is rounded up).
    public func storageBytes(elements n: Int) -> Int { (n + blockElements - 1) / blockElements * blockBytes }

    /// The lower-case name used in JSON and on the command line ("f32", "f16", "bf16").
    public var description: String {
        switch self {
        case .f32: return "f32"
        case .f16: return "f16"
        case .bf16: return "bf16"
        }
    }

    /// Parses "f32", "f16" or "bf16" (also the safetensors spellings "F32", "F16", "BF16").
    public init?(name: String) {
        switch name.lowercased() {
        case "f32", "float32": self = .f32
        case "f16", "float16", "half": self = .f16
        case "bf16", "bfloat16": self = .bf16
        default: return nil
        }
    }

    var cValue: Int32 { Int32(rawValue) }
}
