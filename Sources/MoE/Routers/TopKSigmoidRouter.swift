import MoECore

/// DeepSeek's routing (`DeepseekV3TopkRouter`; DeepSeek-V2's group-limited greedy with
/// `scoring: .softmax`). ROUTING.md §2.
///
/// 1. Scores s: sigmoid of each logit (V3) or softmax over the experts (V2).
/// 2. Selection scores s + b, where b is the per-expert correction bias (V3's
///    `e_score_correction_bias`): it steers selection only, never the weights.
/// 3. Group-limited selection when `groups > 1`: the experts split into `groups` equal
///    groups, a group's score is the sum of its top-2 selection scores (V3) or its maximum (V2),
///    the best `topkGroup` groups stay and the rest are excluded.
/// 4. Top k by selection score; weights are the unbiased s, divided by (sum + 1e-20) when
///    `renormalize`, then multiplied by `routedScaling`.
public struct TopKSigmoidRouter: Router {
    /// How scores come from logits.
    public enum Scoring: String, Sendable, Codable { case sigmoid, softmax }
    /// How a group is scored for group-limited selection.
    public enum GroupScore: String, Sendable, Codable {
        /// Sum of the group's two best selection scores (DeepSeek-V3 in transformers).
        case sumTop2 = "sum-top2"
        /// The group's best selection score (DeepSeek-V2's group-limited greedy).
        case max
    }

    public var name: String { "topk-sigmoid" }
    public let expertCount: Int
    public let k: Int
    public var topK: Int? { k }
    public let scoring: Scoring
    public let bias: [Float]?
    public let groups: Int
    public let topkGroup: Int
    public let groupScore: GroupScore
    public let renormalize: Bool
    public var renormalizesChosenWeights: Bool { renormalize }
    public let routedScaling: Float
    /// Experts per device for DeepSeekMoE's device-level balance loss (1: not reported).
    public let devices: Int

    public init(experts: Int, k: Int, scoring: Scoring = .sigmoid, bias: [Float]? = nil, groups: Int = 1,
                topkGroup: Int? = nil, groupScore: GroupScore? = nil, renormalize: Bool = true,
                routedScaling: Float = 1, devices: Int = 1) {
        precondition(experts > 0 && k >= 1 && k <= experts, "topk-sigmoid: need 1 <= k <= experts")
        precondition(groups >= 1 && experts % groups == 0, "topk-sigmoid: \(experts) experts do not split into \(groups) groups")
        precondition(bias == nil || bias?.count == experts, "topk-sigmoid: bias needs \(experts) values")
        expertCount = experts
        self.k = k
        self.scoring = scoring
        self.bias = bias
        self.groups = groups
        self.topkGroup = min(groups, max(1, topkGroup ?? groups))
        self.groupScore = groupScore ?? (scoring == .sigmoid ? .sumTop2 : .max)
        self.renormalize = renormalize
        self.routedScaling = routedScaling
        self.devices = devices
    }

    /// The same router with another selection bias (DeepSeek-V3's per-layer
    /// `e_score_correction_bias`, which training moves between steps).
    public func withBias(_ bias: [Float]?) -> TopKSigmoidRouter {
        TopKSigmoidRouter(experts: expertCount, k: k, scoring: scoring, bias: bias, groups: groups, topkGroup: topkGroup,
                          groupScore: groupScore, renormalize: renormalize, routedScaling: routedScaling, devices: devices)
    }

    /// Scores s for all tokens, T * E floats.
    func scores(_ logits: Tensor, pool: ThreadPool? = nil) -> [Float] {
        switch scoring {
        case .softmax: return RouterMath.softmax(logits, pool: pool)
        case .sigmoid: return logits.toFloats().map(RouterMath.sigmoid)
        }
    }

    public func route(_ logits: Tensor) -> Routing { route(logits, pool: nil) }

    public func route(_ logits: Tensor, pool: ThreadPool?) -> Routing {
        let e = expertCount
        let t = logits.count / max(1, e)
        let s = scores(logits, pool: pool)
        let perGroup = e / groups
        return RouterMath.routeRows(tokens: t, experts: e, pool: pool) { tok in
            let row = Array(s[(tok * e)..<((tok + 1) * e)])
            var choice = row
            if let bias { for i in 0..<e { choice[i] += bias[i] } }
            if groups > 1 {
                let groupScores: [Float] = (0..<groups).map { g in
                    let members = choice[(g * perGroup)..<((g + 1) * perGroup)]
                    switch groupScore {
                    case .max: return members.max() ?? -.infinity
                    case .sumTop2: return RouterMath.topK(members, 2).reduce(0) { $0 + members[members.startIndex + $1] }
                    }
                }
                let kept = Set(RouterMath.topK(groupScores[...], topkGroup))
                for g in 0..<groups where !kept.contains(g) {
                    for i in (g * perGroup)..<((g + 1) * perGroup) { choice[i] = -.infinity }
                }
            }
            let idx = RouterMath.topK(choice[...], k)
            var w = idx.map { row[$0] }
            if renormalize {
                let sum = w.reduce(0, +) + 1e-20
                w = w.map { $0 / sum }
            }
            w = w.map { $0 * routedScaling }
            return zip(idx, w).map { ($0, $1) }
        }
    }

    /// Losses see scores normalised per token (s / sum s), DeepSeek-V3's sequence-wise form.
    public func auxLosses(_ logits: Tensor, routing: Routing) -> [String: Float] {
        let e = expertCount, t = routing.tokenCount
        var p = scores(logits)
        for tok in 0..<t {
            let sum = p[(tok * e)..<((tok + 1) * e)].reduce(0, +)
            if sum > 0 { for i in (tok * e)..<((tok + 1) * e) { p[i] /= sum } }
        }
        let counts = routing.chosenPerExpert
        var losses: [String: Float] = [
            "load_balance": AuxLoss.loadBalance(probs: p, tokens: t, experts: e, counts: counts),
            "z_loss": AuxLoss.zLoss(logits: logits),
            "expert_balance": AuxLoss.expertBalance(probs: p, tokens: t, experts: e, counts: counts, k: Double(k)),
        ]
        if devices > 1 {
            losses["device_balance"] = AuxLoss.deviceBalance(probs: p, tokens: t, experts: e, counts: counts,
                                                             k: Double(k), devices: devices)
        }
        return losses
    }
}
