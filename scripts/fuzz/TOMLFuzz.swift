// libFuzzer entry for the TOML reader (scripts/fuzz.sh toml): every input is read as a TOML
// document and, when it parses, turned into the JSON config files are decoded from.
import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    _ = try? TOML.json(from: String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self), path: "fuzz.toml")
    return 0
}
