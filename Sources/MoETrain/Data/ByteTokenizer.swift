/// The tokenizer for training from scratch: one id per UTF-8 byte (0...255), then `<bos>`
/// (256), `<eos>` (257) and `<pad>` (258). Any text round-trips.
public struct ByteTokenizer: Sendable {
    public static let bos = 256, eos = 257, pad = 258
    public static let vocabularySize = 259

    public init() {}

    /// The bytes of `text` (with a leading BOS when asked).
    public func encode(_ text: String, bos: Bool = false) -> [Int] {
        (bos ? [Self.bos] : []) + text.utf8.map(Int.init)
    }

    /// Text for `ids`; special ids are dropped, and invalid UTF-8 becomes U+FFFD.
    public func decode(_ ids: [Int]) -> String {
        String(decoding: ids.filter { $0 >= 0 && $0 < 256 }.map(UInt8.init), as: UTF8.self)
    }
}
