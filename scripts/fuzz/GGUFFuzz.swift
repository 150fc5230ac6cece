// libFuzzer entry for the GGUF reader (scripts/fuzz.sh gguf builds it together with MoECore and
// the readers' sources as one module): every input is written to a file and opened; a parsed
// file's tensors are all read. An input that starts with "SPLT", a file count N (2 to 4) and
// N - 1 little-endian u32 lengths is a split set instead: its files are written under
// llama-gguf-split's names (`-0000K-of-0000N.gguf`) and the first is opened, so the set's checks
// (`GGUF+Split.swift`) are fuzzed too. Any crash, hang or allocation abort is a finding; a
// thrown `ModelError` is the expected answer to a bad file.
import Foundation

let fuzzDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-fuzz-\(getpid())").path
let fuzzPath = fuzzDirectory + "/one.gguf"

/// The files of a split-set input, or nil for a single file.
func splitFiles(_ bytes: [UInt8]) -> [[UInt8]]? {
    guard bytes.count >= 5, bytes[0..<4] == [0x53, 0x50, 0x4C, 0x54], (2...4).contains(Int(bytes[4])) else { return nil }
    let count = Int(bytes[4])
    var at = 5 + 4 * (count - 1)
    guard bytes.count >= at else { return nil }
    var files: [[UInt8]] = []
    for k in 0..<(count - 1) {
        let p = 5 + 4 * k
        let length = Int(bytes[p]) | Int(bytes[p + 1]) << 8 | Int(bytes[p + 2]) << 16 | Int(bytes[p + 3]) << 24
        guard length <= bytes.count - at else { return nil }
        files.append(Array(bytes[at..<(at + length)]))
        at += length
    }
    files.append(Array(bytes[at...]))
    return files
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    try? FileManager.default.createDirectory(atPath: fuzzDirectory, withIntermediateDirectories: true)
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    var path = fuzzPath
    if let files = splitFiles(bytes) {
        for (k, file) in files.enumerated() {
            let name = fuzzDirectory + String(format: "/set-%05d-of-%05d.gguf", k + 1, files.count)
            guard FileManager.default.createFile(atPath: name, contents: Data(file)) else { return 0 }
            if k == 0 { path = name }
        }
    } else {
        guard FileManager.default.createFile(atPath: fuzzPath, contents: Data(bytes)) else { return 0 }
    }
    if let file = try? GGUFFile(path: path) {
        for name in file.tensorNames { _ = try? file.tensor(name).toFloats() }
        _ = try? file.tokenizerJSON()
        // The tokenizer built from the file's typed vocabulary (what `moe` commands load), and a
        // text through it.
        _ = (try? file.tokenizer())?.encode("Hello, world! 123 ä", addSpecialTokens: true)
    }
    return 0
}
