// libFuzzer entry for config.json (scripts/fuzz.sh config): every input is read as a config.json
// of whichever family its model_type names; an accepted config's weight list, sizes and rotary
// embedding are built, as loading a model does before it reads a tensor. A thrown `ModelError`
// is the expected answer to a bad config; a crash (an overflow trap, a bad allocation), a hang
// or an allocation past the fuzzer's limit is a finding.
import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let spec = try? Architectures.spec(configData: Data(bytes: data, count: size), path: "config.json") else { return 0 }
    var total = 0
    for w in spec.weights {
        precondition(w.shape.allSatisfy { $0 >= 0 }, "negative dimension in \(w.name)")
        let (count, overflow) = w.shape.reduce((1, false)) { acc, d in
            let (p, o) = acc.0.multipliedReportingOverflow(by: d)
            return (p, acc.1 || o)
        }
        precondition(!overflow, "\(w.name) overflows Int")
        total += count
    }
    precondition(total <= 1 << 42, "accepted a config of \(total) weights")
    _ = spec.rotaryEmbedding
    return 0
}
