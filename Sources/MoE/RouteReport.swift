import Foundation
import MoECore

/// What `moe route` prints: each token's experts (descending weight), weights and whether
/// capacity dropped any of its choices, plus the router's auxiliary losses. DESIGN.md contracts.
public struct RouteReport: Codable, Sendable {
    /// One token's routing.
    public struct Token: Codable, Sendable, Equatable {
        public var experts: [Int]
        public var weights: [Float]
        /// True when capacity removed at least one of the token's chosen experts.
        public var dropped: Bool
        /// The experts capacity removed (empty when none).
        public var droppedExperts: [Int]

        enum CodingKeys: String, CodingKey {
            case experts, weights, dropped
            case droppedExperts = "dropped_experts"
        }
    }

    public var router: String
    public var experts: Int
    public var tokens: [Token]
    public var auxLosses: [String: Float]

    enum CodingKeys: String, CodingKey {
        case router, experts, tokens
        case auxLosses = "aux_losses"
    }

    /// Routes `logits` [T, router.logitCount] and reports the result.
    public init(router: any Router, logits: Tensor) {
        let routing = router.route(logits)
        self.router = router.name
        experts = router.expertCount
        tokens = (0..<routing.tokenCount).map { t in
            Token(experts: Array(routing.experts(of: t)), weights: Array(routing.weights(of: t)),
                  dropped: !routing.dropped[t].isEmpty, droppedExperts: routing.dropped[t])
        }
        auxLosses = router.auxLosses(logits, routing: routing)
    }
}

/// Reads per-token router logits from JSON: an array with one array of numbers per token, all
/// the same length. Errors name the file and the token at fault.
public enum RouterLogitsFile {
    /// Logits [T, C] from the file at `path`.
    public static func load(_ path: String) throws -> Tensor {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw MoECoreError.io(path: path, reason: "cannot read: \(systemReason(error))")
        }
        return try parse(data, path: path)
    }

    /// Logits [T, C] from JSON text (`path` names it in errors).
    public static func parse(_ data: Data, path: String) throws(MoEError) -> Tensor {
        let wide = try decode([[Double]].self, data, path: path, what: "an array of per-token arrays of numbers")
        var rows: [[Float]] = []
        for (t, row) in wide.enumerated() {
            var floats: [Float] = []
            floats.reserveCapacity(row.count)
            for (i, v) in row.enumerated() {
                guard Float(v).isFinite else {
                    throw .invalidLogits(path: path, field: "token \(t)[\(i)]", reason: "\(v) is outside f32 range")
                }
                floats.append(Float(v))
            }
            rows.append(floats)
        }
        guard let width = rows.first?.count, width > 0 else {
            throw .invalidLogits(path: path, field: "(top level)", reason: "no tokens, or a token with no logits")
        }
        for (t, row) in rows.enumerated() where row.count != width {
            throw .invalidLogits(path: path, field: "token \(t)", reason: "expected \(width) numbers (as token 0), got \(row.count)")
        }
        return Tensor(shape: [rows.count, width], values: rows.flatMap { $0 })
    }

    /// Decodes JSON, turning decoding errors into `MoEError.invalidLogits` naming the token
    /// and index (`token 3[2]`).
    static func decode<T: Decodable>(_ type: T.Type, _ data: Data, path: String, what: String) throws(MoEError) -> T {
        func field(_ codingPath: [any CodingKey]) -> String {
            let idx = codingPath.compactMap(\.intValue)
            switch idx.count {
            case 0: return "(top level)"
            case 1: return "token \(idx[0])"
            default: return "token \(idx[0])[\(idx[1])]"
            }
        }
        do {
            return try JSONDecoder().decode(type, from: data)
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            throw .invalidLogits(path: path, field: field(context.codingPath), reason: "expected \(what)")
        } catch let DecodingError.dataCorrupted(context) {
            throw .invalidLogits(path: path, field: field(context.codingPath), reason: "not valid JSON (\(context.debugDescription))")
        } catch {
            throw .invalidLogits(path: path, field: "(json)", reason: "\(error)")
        }
    }

    /// A JSON array of numbers (a bias file), checked to have `count` entries.
    public static func loadVector(_ path: String, count: Int, field: String) throws -> [Float] {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw MoECoreError.io(path: path, reason: "cannot read: \(systemReason(error))")
        }
        let values = try decodeVector(data, path: path, field: field)
        if let i = values.firstIndex(where: { !$0.isFinite }) {
            throw MoEError.invalidConfig(path: path, field: "\(field)[\(i)]", reason: "outside f32 range")
        }
        guard values.count == count else {
            throw MoEError.invalidConfig(path: path, field: field, reason: "expected \(count) numbers (one per expert), got \(values.count)")
        }
        return values
    }

    /// A JSON array of numbers, its errors reported against `field` (`bias[3]`).
    static func decodeVector(_ data: Data, path: String, field: String) throws(MoEError) -> [Float] {
        let result = Result { () throws(MoEError) -> [Double] in
            try decode([Double].self, data, path: path, what: "a JSON array of numbers")
        }
        switch result {
        case let .success(values):
            return values.map(Float.init)
        case let .failure(.invalidLogits(p, f, reason)):
            throw .invalidConfig(path: p, field: f == "(top level)" ? field : f.replacingOccurrences(of: "token", with: field),
                                 reason: reason)
        case let .failure(other):
            throw other
        }
    }
}
