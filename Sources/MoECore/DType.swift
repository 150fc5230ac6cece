import _MoEKernels

/// The element type of a tensor's storage.
///
/// Weights stay in the dtype they were stored in; kernels widen them to `f32` in registers and
/// accumulate in `f32`. Activations are `f32`. Raw values match the C kernels' `moek_dtype`.
public enum DType: Int, Sendable, CaseIterable, CustomStringConvertible {
    case f32 = 0
    case f16 = 1
    case bf16 = 2

    /// Bytes per element.
    public var byteSize: Int { self == .f32 ? 4 : 2 }

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
