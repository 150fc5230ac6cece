import Foundation

/// Runs the built `moe` executable (beside the test bundle) with `arguments`, in `folder` when
/// given, with `environment` added to this process's; returns its exit status, standard output
/// and standard error.
func runMoe(_ arguments: [String], in folder: URL? = nil,
            environment: [String: String] = [:]) throws -> (status: Int32, out: String, err: String) {
    let process = Process()
    process.executableURL = Bundle.main.bundleURL.appendingPathComponent("moe")
    #if os(macOS)
    for bundle in Bundle.allBundles where bundle.bundlePath.hasSuffix(".xctest") {
        process.executableURL = bundle.bundleURL.deletingLastPathComponent().appendingPathComponent("moe")
    }
    #endif
    process.arguments = arguments
    if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
    if let folder { process.currentDirectoryURL = folder }
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}
