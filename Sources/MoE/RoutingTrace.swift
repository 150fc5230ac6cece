/// Routing statistics gathered over layers and forward passes (OpenMoE-style analysis).
///
/// `record` adds one layer's `Routing`; the trace keeps per layer the chosen experts and
/// weights of every token (when `keepTokens`), tokens per expert, the histogram of experts per
/// token (true experts only: null experts never appear in a routing), and dropped assignments.
public struct RoutingTrace: Sendable, Codable {
    /// One recorded layer call.
    public struct LayerRecord: Sendable, Codable {
        public var layer: Int
        /// Per token: chosen experts and weights (descending), and experts capacity dropped.
        public var experts: [[Int]]
        public var weights: [[Float]]
        public var dropped: [[Int]]
    }

    /// Whether per-token choices are kept (counters are always kept).
    public var keepTokens: Bool
    public private(set) var records: [LayerRecord] = []
    /// Per layer index: assignments per expert, summed over calls.
    public private(set) var tokensPerExpert: [Int: [Int]] = [:]
    /// `expertsPerToken[n]`: token-layer pairs that got n true experts.
    public private(set) var expertsPerToken: [Int] = []
    /// Assignments removed by capacity.
    public private(set) var droppedAssignments = 0
    /// Token-layer pairs left with no expert by capacity.
    public private(set) var droppedTokens = 0

    public init(keepTokens: Bool = true) { self.keepTokens = keepTokens }

    /// Adds one layer's routing.
    public mutating func record(layer: Int, routing: Routing) {
        var perExpert = tokensPerExpert[layer] ?? [Int](repeating: 0, count: routing.expertCount)
        if perExpert.count < routing.expertCount { perExpert += [Int](repeating: 0, count: routing.expertCount - perExpert.count) }
        for e in routing.experts { perExpert[e] += 1 }
        tokensPerExpert[layer] = perExpert
        for t in 0..<routing.tokenCount {
            let n = routing.offsets[t + 1] - routing.offsets[t]
            if expertsPerToken.count <= n { expertsPerToken += [Int](repeating: 0, count: n + 1 - expertsPerToken.count) }
            expertsPerToken[n] += 1
            if n == 0 && !routing.dropped[t].isEmpty { droppedTokens += 1 }
        }
        droppedAssignments += routing.droppedCount
        if keepTokens {
            records.append(LayerRecord(layer: layer, experts: (0..<routing.tokenCount).map { Array(routing.experts(of: $0)) },
                                       weights: (0..<routing.tokenCount).map { Array(routing.weights(of: $0)) },
                                       dropped: routing.dropped))
        }
    }

    /// Mean true experts per token over everything recorded.
    public var meanExpertsPerToken: Double {
        let total = expertsPerToken.reduce(0, +)
        return total == 0 ? 0 : Double(expertsPerToken.enumerated().reduce(0) { $0 + $1.offset * $1.element }) / Double(total)
    }
}
