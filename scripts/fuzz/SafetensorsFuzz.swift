// libFuzzer entry for the safetensors reader (scripts/fuzz.sh safetensors): every input is
// written to a file and opened; a parsed file's tensors are all read. A thrown `ModelError` is
// the expected answer to a bad file; a crash, hang or allocation abort is a finding.
import Foundation

let fuzzPath = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-fuzz-\(getpid()).safetensors").path

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard FileManager.default.createFile(atPath: fuzzPath, contents: Data(bytes: data, count: size)) else { return 0 }
    if let file = try? SafetensorsFile(path: fuzzPath) {
        for name in file.entries.keys { _ = (try? file.tensor(name))?.toFloats() }
    }
    return 0
}
