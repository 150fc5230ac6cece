/// The experts chosen for a batch of tokens, and the weight of each: ragged on purpose.
///
/// Token t's choices are `experts[offsets[t] ..< offsets[t + 1]]` with the matching
/// `weights`, in descending weight order. A token may have any number of experts, zero
/// included (top-p, null experts, expert choice and capacity dropping all produce that).
/// Only routed (true) experts appear: null experts are never listed.
public struct Routing: Sendable, Equatable {
    /// Tokens routed.
    public private(set) var tokenCount: Int
    /// Routed experts; ids are in `0 ..< expertCount`.
    public let expertCount: Int
    /// `tokenCount + 1` offsets into `experts` and `weights`.
    public private(set) var offsets: [Int]
    /// Chosen expert ids, token by token.
    public private(set) var experts: [Int]
    /// The weight of each choice (what the expert's output is multiplied by).
    public private(set) var weights: [Float]
    /// Per token, the experts that capacity removed (empty when none were).
    public private(set) var dropped: [[Int]]

    /// An empty routing to append tokens to.
    public init(expertCount: Int, reservingTokens: Int = 0) {
        self.expertCount = expertCount
        tokenCount = 0
        offsets = [0]
        offsets.reserveCapacity(reservingTokens + 1)
        experts = []
        weights = []
        dropped = []
    }

    /// Builds a routing from per-token lists (each sorted here by descending weight, ties by
    /// lower expert id).
    public init(expertCount: Int, tokens: [[(expert: Int, weight: Float)]]) {
        self.init(expertCount: expertCount, reservingTokens: tokens.count)
        for choices in tokens { append(choices) }
    }

    /// A routing from flat lists with `offsets` as in `offsets` above: token t's choices are
    /// `experts[offsets[t] ..< offsets[t + 1]]`, which the caller has already put in the order
    /// `append` would (descending weight, ties to the lower id). No token has dropped experts.
    init(expertCount: Int, offsets: [Int], experts: [Int], weights: [Float]) {
        precondition(offsets.first == 0 && offsets.last == experts.count && weights.count == experts.count,
                     "routing: offsets must run from 0 to the \(experts.count) choices")
        for e in experts { precondition(e >= 0 && e < expertCount, "expert \(e) out of 0..<\(expertCount)") }
        self.expertCount = expertCount
        tokenCount = offsets.count - 1
        self.offsets = offsets
        self.experts = experts
        self.weights = weights
        dropped = [[Int]](repeating: [], count: tokenCount)
    }

    /// Appends one token's choices, sorting them by descending weight (ties: lower id first).
    public mutating func append(_ choices: [(expert: Int, weight: Float)], dropped: [Int] = []) {
        for c in Self.ordered(choices) {
            precondition(c.expert >= 0 && c.expert < expertCount, "expert \(c.expert) out of 0..<\(expertCount)")
            experts.append(c.expert)
            weights.append(c.weight)
        }
        offsets.append(experts.count)
        self.dropped.append(dropped)
        tokenCount += 1
    }

    /// `choices` in a token's order: descending weight, ties to the lower id.
    static func ordered(_ choices: [(expert: Int, weight: Float)]) -> [(expert: Int, weight: Float)] {
        choices.sorted { $0.weight > $1.weight || ($0.weight == $1.weight && $0.expert < $1.expert) }
    }

    /// Token t's experts, in descending weight order.
    public func experts(of t: Int) -> ArraySlice<Int> { experts[offsets[t]..<offsets[t + 1]] }
    /// Token t's weights, matching `experts(of:)`.
    public func weights(of t: Int) -> ArraySlice<Float> { weights[offsets[t]..<offsets[t + 1]] }
    /// Total (token, expert) assignments.
    public var assignmentCount: Int { experts.count }
    /// Assignments per expert.
    public var tokensPerExpert: [Int] {
        var counts = [Int](repeating: 0, count: expertCount)
        for e in experts { counts[e] += 1 }
        return counts
    }
    /// What the router chose per expert before capacity dropped any: kept plus dropped. The
    /// balance losses count this, as Switch and transformers do.
    public var chosenPerExpert: [Int] {
        var counts = tokensPerExpert
        for list in dropped { for e in list { counts[e] += 1 } }
        return counts
    }
    /// Assignments removed by capacity, over all tokens.
    public var droppedCount: Int { dropped.reduce(0) { $0 + $1.count } }
}
