import Foundation
import MoE

/// The `lora` section of a training config: plain LoRA on a frozen checkpoint, with PEFT's
/// meaning for every key, so the adapter saved is the one PEFT would train.
///
/// ```json
/// "lora": {"rank": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}
/// ```
/// `target_modules` is a list of module names, each matching a module whose dotted name is it
/// or ends in `.name` (PEFT's rule); a single string is a regular expression the whole module
/// name must match; `"all-linear"` is every linear projection but the LM head.
public struct LoRAConfig: Codable, Sendable, Equatable {
    /// Which modules get an adapter.
    public enum Targets: Sendable, Equatable {
        case names([String]), regex(String), allLinear
    }

    public var rank = 8
    public var alpha: Float = 16
    /// Dropout on each adapter's input (PEFT's `lora_dropout`).
    public var dropout: Float = 0
    public var targetModules = Targets.names(["q_proj", "k_proj", "v_proj", "o_proj"])
    /// rsLoRA: scale alpha / √rank instead of alpha / rank.
    public var useRSLoRA = false

    enum CodingKeys: String, CodingKey, CaseIterable {
        case rank, alpha, dropout, targetModules = "target_modules", useRSLoRA = "use_rslora"
    }

    public init() {}

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = LoRAConfig()
        rank = try c.decodeIfPresent(Int.self, forKey: .rank) ?? d.rank
        alpha = try c.decodeIfPresent(Float.self, forKey: .alpha) ?? d.alpha
        dropout = try c.decodeIfPresent(Float.self, forKey: .dropout) ?? d.dropout
        useRSLoRA = try c.decodeIfPresent(Bool.self, forKey: .useRSLoRA) ?? d.useRSLoRA
        if let list = try? c.decodeIfPresent([String].self, forKey: .targetModules) {
            targetModules = .names(list)
        } else if let one = try c.decodeIfPresent(String.self, forKey: .targetModules) {
            targetModules = one == "all-linear" ? .allLinear : .regex(one)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(rank, forKey: .rank)
        try c.encode(alpha, forKey: .alpha)
        try c.encode(dropout, forKey: .dropout)
        try c.encode(useRSLoRA, forKey: .useRSLoRA)
        switch targetModules {
        case let .names(list): try c.encode(list, forKey: .targetModules)
        case let .regex(pattern): try c.encode(pattern, forKey: .targetModules)
        case .allLinear: try c.encode("all-linear", forKey: .targetModules)
        }
    }

    /// The factor on `B A`: alpha / rank, or alpha / √rank with rsLoRA.
    public var scale: Float { useRSLoRA ? alpha / Float(rank).squareRoot() : alpha / Float(rank) }

    /// Checks ranges; throws naming the field (`lora.<key>`) and `path`.
    public func validate(path: String?) throws(MoEError) {
        func bad(_ f: String, _ r: String) -> MoEError { .invalidConfig(path: path, field: "lora.\(f)", reason: r) }
        guard (1...4096).contains(rank) else { throw bad("rank", "must be in 1...4096, got \(rank)") }
        guard alpha.isFinite && alpha > 0 else { throw bad("alpha", "must be positive and finite, got \(alpha)") }
        guard dropout >= 0 && dropout < 1 else { throw bad("dropout", "must be in [0, 1), got \(dropout)") }
        switch targetModules {
        case let .names(list):
            guard !list.isEmpty, list.allSatisfy({ !$0.isEmpty }) else { throw bad("target_modules", "must name at least one module") }
        case let .regex(pattern):
            guard (try? NSRegularExpression(pattern: pattern)) != nil else {
                throw bad("target_modules", "'\(pattern)' is not a regular expression")
            }
        case .allLinear: break
        }
    }

    /// Whether module `name` (dotted, as transformers names it) is a target, by PEFT's rules;
    /// `isHead` marks the LM head, which `all-linear` leaves out.
    public func targets(_ name: String, isHead: Bool) -> Bool {
        switch targetModules {
        case let .names(list):
            return list.contains { name == $0 || name.hasSuffix("." + $0) }
        case let .regex(pattern):
            guard let re = try? NSRegularExpression(pattern: "^(?:\(pattern))$") else { return false }
            return re.firstMatch(in: name, range: NSRange(name.startIndex..., in: name)) != nil
        case .allLinear:
            return !isHead
        }
    }
}
