// libFuzzer entry for tokenizer.json and the text it encodes (scripts/fuzz.sh tokenizer): the
// input up to its first NUL byte is the tokenizer.json, the rest the text; a tokenizer that
// parses encodes the text and decodes the ids. Inputs are bounded (-max_len), so work must be
// bounded too: a hang is a finding, as a crash is.
import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let cut = bytes.firstIndex(of: 0) ?? size
    guard let tokenizer = try? Tokenizer(data: Data(bytes[0..<cut]), path: "fuzz.json") else { return 0 }
    let text = String(decoding: bytes[min(size, cut + 1)...], as: UTF8.self)
    _ = tokenizer.decode(tokenizer.encode(text))
    return 0
}
