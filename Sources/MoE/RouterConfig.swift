import Foundation
import MoECore

/// A router chosen by name and parameters: what a JSON config, the CLI and code share.
///
/// ```json
/// {"name": "topk-sigmoid", "k": 8, "n_group": 8, "topk_group": 4, "routed_scaling": 2.5}
/// ```
/// Names: `topk-softmax`, `topk-sigmoid`, `top-p`, `null-experts`, `expert-choice`,
/// `recurrent`, `switch`. Absent parameters take the defaults of each method's paper or
/// reference code (ROUTING.md). `capacity_factor` adds capacity and token dropping to any
/// token-choice router.
public struct RouterConfig: Codable, Sendable, Equatable, StrictConfig {
    public var name: String
    public var k: Int?
    public var p: Float?
    public var renormalize: Bool?
    public var nullExperts: Int?
    public var capacityFactor: Float?
    public var dropBy: Capacity.DropPriority?
    public var minCapacity: Int?
    public var bias: [Float]?
    public var nGroup: Int?
    public var topkGroup: Int?
    public var routedScaling: Float?
    public var scoring: TopKSigmoidRouter.Scoring?
    public var groupScore: TopKSigmoidRouter.GroupScore?
    public var minExperts: Int?
    public var maxExperts: Int?
    public var devices: Int?
    /// RMoE's GRU state size d_r (`recurrent` only; default 256, as RMoE's
    /// `moe_router_rnn_hidden_size`).
    public var rnnHiddenSize: Int?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, k, p, renormalize, bias, scoring, devices
        case nullExperts = "null_experts", capacityFactor = "capacity_factor", dropBy = "drop_by"
        case minCapacity = "min_capacity", nGroup = "n_group", topkGroup = "topk_group"
        case routedScaling = "routed_scaling", groupScore = "group_score", minExperts = "min_experts"
        case maxExperts = "max_experts", rnnHiddenSize = "rnn_hidden_size"
    }

    /// The keys a router config may hold.
    public static var configKeys: ConfigKeys { .keys(CodingKeys.self) }

    /// Every router name.
    public static let names = ["topk-softmax", "topk-sigmoid", "top-p", "null-experts", "expert-choice", "recurrent", "switch"]

    public init(name: String) { self.name = name }

    /// Decodes a config from JSON; errors name `path` and the field.
    public static func decode(json data: Data, path: String) throws(MoEError) -> RouterConfig {
        do {
            return try ConfigFile.decode(RouterConfig.self, data: data, path: path, format: .json)
        } catch {
            if case let .invalidValue(path, field, reason) = error { throw .invalidConfig(path: path, field: field, reason: reason) }
            throw .invalidConfig(path: path, field: "(file)", reason: error.description)
        }
    }

    /// Reads a config file: TOML if the name ends in `.toml`, JSON otherwise.
    public static func load(path: String) throws -> RouterConfig {
        try ConfigFile.load(RouterConfig.self, path: path)
    }

    /// The router for `experts` routed experts. Throws naming the field at fault.
    public func makeRouter(experts: Int, path: String? = nil) throws(MoEError) -> any Router {
        func bad(_ field: String, _ reason: String) -> MoEError { .invalidConfig(path: path, field: field, reason: reason) }
        guard experts >= 1 else { throw bad("experts", "need at least one routed expert, got \(experts)") }
        func checkK(_ k: Int, max: Int) throws(MoEError) -> Int {
            guard k >= 1 && k <= max else { throw bad("k", "must be in 1...\(max), got \(k)") }
            return k
        }
        // Bounded so that every capacity computed from it (factor x tokens x k / experts) is an Int.
        if let f = capacityFactor, !(f > 0 && f <= 1e6) { throw bad("capacity_factor", "must be in (0, 1e6], got \(f)") }
        if let m = minCapacity, m < 0 { throw bad("min_capacity", "must not be negative, got \(m)") }
        let capacity = capacityFactor.map { Capacity(factor: $0, dropBy: dropBy ?? .position, minimum: minCapacity ?? 0) }
        let router: any Router
        switch name {
        case "topk-softmax":
            router = TopKSoftmaxRouter(experts: experts, k: try checkK(k ?? min(2, experts), max: experts), renormalize: renormalize ?? true,
                                       devices: try checkDevices(experts, bad))
        case "recurrent":
            let h = rnnHiddenSize ?? 256
            guard h >= 1 else { throw bad("rnn_hidden_size", "must be at least 1, got \(h)") }
            router = RecurrentRouter(experts: experts, k: try checkK(k ?? min(2, experts), max: experts), stateSize: h)
        case "switch":
            if let k, k != 1 { throw bad("k", "switch routes each token to one expert, got \(k)") }
            return SwitchRouter(experts: experts, capacity: capacity ?? Capacity(factor: 1.25, dropBy: dropBy ?? .position,
                                                                                   minimum: minCapacity ?? 0))
        case "topk-sigmoid":
            let groups = nGroup ?? 1
            guard groups >= 1, experts % groups == 0 else { throw bad("n_group", "\(experts) experts do not split into \(groups) groups") }
            let tg = topkGroup ?? groups
            guard tg >= 1 && tg <= groups else { throw bad("topk_group", "must be in 1...\(groups), got \(tg)") }
            let k = try checkK(k ?? min(8, tg * (experts / groups)), max: tg * (experts / groups))
            if let bias, bias.count != experts { throw bad("bias", "needs \(experts) values, got \(bias.count)") }
            if let s = routedScaling, !(s.isFinite && s > 0) { throw bad("routed_scaling", "must be a finite number > 0, got \(s)") }
            router = TopKSigmoidRouter(experts: experts, k: k, scoring: scoring ?? .sigmoid, bias: bias, groups: groups,
                                       topkGroup: tg, groupScore: groupScore, renormalize: renormalize ?? true,
                                       routedScaling: routedScaling ?? 1, devices: try checkDevices(experts, bad))
        case "top-p":
            let p = self.p ?? 0.4
            guard p > 0 && p <= 1 else { throw bad("p", "must be in (0, 1] (a probability mass), got \(p)") }
            if let m = minExperts, m < 1 || m > experts { throw bad("min_experts", "must be in 1...\(experts), got \(m)") }
            if let m = maxExperts, m < (minExperts ?? 1) || m > experts { throw bad("max_experts", "must be in \(minExperts ?? 1)...\(experts), got \(m)") }
            router = TopPRouter(experts: experts, p: p, minExperts: minExperts ?? 1, maxExperts: maxExperts, renormalize: renormalize ?? false)
        case "null-experts":
            guard let m = nullExperts, m >= 0 else { throw bad("null_experts", "needs the number of null experts (>= 0)") }
            router = NullExpertsRouter(experts: experts, nullExperts: m, k: try checkK(k ?? min(4, experts + m), max: experts + m))
        case "expert-choice":
            // Its capacity factor is its own c (tokens per expert = T * c / E), not token dropping.
            return ExpertChoiceRouter(experts: experts, capacityFactor: capacityFactor ?? 2)
        default:
            throw bad("name", "unknown router '\(name)'; known: \(Self.names.joined(separator: ", "))")
        }
        return capacity.map { CapacityLimitedRouter(router, capacity: $0) } ?? router
    }

    private func checkDevices(_ experts: Int, _ bad: (String, String) -> MoEError) throws(MoEError) -> Int {
        let d = devices ?? 1
        guard d >= 1 && d <= experts else { throw bad("devices", "must be in 1...\(experts), got \(d)") }
        return d
    }
}

