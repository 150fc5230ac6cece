import ArgumentParser
import Foundation
import MoE
import MoECore

/// `moe route`: shows exactly what a router decides for given per-token logits, as JSON.
struct Route: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "route",
        abstract: "Route per-token router logits with any router; print the experts, weights, drops and aux losses as JSON.",
        discussion: """
            The logits file is a JSON array with one array of numbers per token: the E routed experts' \
            logits, followed by the M null experts' for --router null-experts.
            Routers: \(RouterConfig.names.joined(separator: ", ")).
            """)

    @Option(help: "Router name (\(RouterConfig.names.joined(separator: ", "))).")
    var router: String?

    @Option(help: "JSON file of per-token logits: [[z_0, ..., z_{E-1}], ...].")
    var logits: String

    @Option(help: "Router config file, JSON ({\"name\": ..., \"k\": ...}) or TOML (.toml); options given here override it.")
    var config: String?

    @Option(help: "Experts per token (top-k, null experts' k').")
    var k: Int?

    @Option(help: "Cumulative probability threshold for top-p (strict: cumsum > p).")
    var p: Float?

    @Flag(inversion: .prefixedNo, help: "Renormalise the chosen weights to sum to 1 (router default if omitted).")
    var renormalize: Bool?

    @Option(name: .customLong("null-experts"), help: "Null experts M (AdaMoE): the last M logits of each token.")
    var nullExperts: Int?

    @Option(name: .customLong("capacity-factor"), help: "Expert capacity factor: adds token dropping (expert-choice: its c).")
    var capacityFactor: Float?

    @Option(name: .customLong("drop-by"), help: "Which assignments keep their slot when an expert is full: position or score.")
    var dropBy: String?

    @Option(name: .customLong("bias-file"), help: "JSON array of E per-expert selection biases (DeepSeek-V3 e_score_correction_bias).")
    var biasFile: String?

    @Option(name: .customLong("n-group"), help: "Expert groups for group-limited selection (topk-sigmoid).")
    var nGroup: Int?

    @Option(name: .customLong("topk-group"), help: "Groups kept per token (topk-sigmoid).")
    var topkGroup: Int?

    @Option(name: .customLong("routed-scaling"), help: "Multiplier on the routed weights (topk-sigmoid).")
    var routedScaling: Float?

    @Option(help: "Scores for topk-sigmoid: sigmoid (DeepSeek-V3) or softmax (DeepSeek-V2).")
    var scoring: String?

    @Option(name: .customLong("min-experts"), help: "Fewest experts per token (top-p).")
    var minExperts: Int?

    @Option(name: .customLong("max-experts"), help: "Most experts per token (top-p).")
    var maxExperts: Int?

    @Option(help: "Device groups for DeepSeekMoE's device-level balance loss.")
    var devices: Int?

    @Flag(help: "Pretty-print the JSON.")
    var pretty = false

    /// The ranges each option has whatever the logits: out of them is a command-line error.
    mutating func validate() throws {
        func positive(_ v: Int?, _ name: String) throws { if let v, v < 1 { throw ValidationError("\(name) must be at least 1, got \(v)") } }
        try positive(k, "--k")
        try positive(nGroup, "--n-group")
        try positive(topkGroup, "--topk-group")
        try positive(minExperts, "--min-experts")
        try positive(maxExperts, "--max-experts")
        try positive(devices, "--devices")
        if let nullExperts, nullExperts < 0 { throw ValidationError("--null-experts must not be negative, got \(nullExperts)") }
        if let p, !(p > 0 && p <= 1) { throw ValidationError("--p must be in (0, 1], got \(p)") }
        if let capacityFactor, !(capacityFactor > 0 && capacityFactor <= 1e6) {
            throw ValidationError("--capacity-factor must be in (0, 1e6], got \(capacityFactor)")
        }
        if let routedScaling, !(routedScaling > 0 && routedScaling.isFinite) {
            throw ValidationError("--routed-scaling must be positive and finite, got \(routedScaling)")
        }
    }

    func run() throws {
        do {
            var cfg = try config.map { try RouterConfig.load(path: $0) } ?? RouterConfig(name: router ?? "")
            if let router { cfg.name = router }
            guard !cfg.name.isEmpty else { throw ValidationError("give --router NAME (or a --config with a name)") }
            cfg.k = k ?? cfg.k
            cfg.p = p ?? cfg.p
            cfg.renormalize = renormalize ?? cfg.renormalize
            cfg.nullExperts = nullExperts ?? cfg.nullExperts
            cfg.capacityFactor = capacityFactor ?? cfg.capacityFactor
            if let dropBy {
                guard let d = Capacity.DropPriority(rawValue: dropBy) else {
                    throw ValidationError("--drop-by: '\(dropBy)' is not position or score")
                }
                cfg.dropBy = d
            }
            if let scoring {
                guard let s = TopKSigmoidRouter.Scoring(rawValue: scoring) else {
                    throw ValidationError("--scoring: '\(scoring)' is not sigmoid or softmax")
                }
                cfg.scoring = s
            }
            cfg.nGroup = nGroup ?? cfg.nGroup
            cfg.topkGroup = topkGroup ?? cfg.topkGroup
            cfg.routedScaling = routedScaling ?? cfg.routedScaling
            cfg.minExperts = minExperts ?? cfg.minExperts
            cfg.maxExperts = maxExperts ?? cfg.maxExperts
            cfg.devices = devices ?? cfg.devices

            let z = try RouterLogitsFile.load(logits)
            let width = z.shape[1]
            let experts = width - (cfg.name == "null-experts" ? (cfg.nullExperts ?? 0) : 0)
            guard experts >= 1 else {
                throw MoEError.invalidLogits(path: logits, field: "token 0",
                                             reason: "\(width) logits leave no routed experts after \(cfg.nullExperts ?? 0) null experts")
            }
            if let biasFile { cfg.bias = try RouterLogitsFile.loadVector(biasFile, count: experts, field: "bias") }
            let r = try cfg.makeRouter(experts: experts, path: config)
            try printJSON(RouteReport(router: r, logits: z), pretty: pretty)
        } catch let MoEError.invalidConfig(path: nil, field, reason) {
            throw CLIError("--\(field.replacingOccurrences(of: "_", with: "-")): \(reason)")  // no file: the field is an option
        } catch let error as MoEError {
            throw CLIError(error.description)
        } catch let error as MoECoreError {
            throw CLIError(error.description)
        }
    }
}

/// An error the CLI reports as one line on standard error, exiting with status 1.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}
