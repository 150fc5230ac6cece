// libFuzzer entry for the GGUF reader (scripts/fuzz.sh gguf builds it together with MoECore and
// the readers' sources as one module): every input is written to a file and opened; a parsed
// file's tensors are all read. Any crash, hang or allocation abort is a finding; a thrown
// `ModelError` is the expected answer to a bad file.
import Foundation

let fuzzPath = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-fuzz-\(getpid()).gguf").path

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard FileManager.default.createFile(atPath: fuzzPath, contents: Data(bytes: data, count: size)) else { return 0 }
    if let file = try? GGUFFile(path: fuzzPath) {
        for name in file.tensorNames { _ = try? file.tensor(name).toFloats() }
        _ = try? file.tokenizerJSON()
    }
    return 0
}
