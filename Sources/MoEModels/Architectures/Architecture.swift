import Foundation
import MoE

/// One model family: how its config.json reads (a `Decodable` config in Hugging Face spelling,
/// with the family's defaults), what decoder it describes, and the config.json keys of its own
/// that `init-random` writes. Each family is one file in this folder, listed once in
/// `Architectures.families`; its tensor names travel in the spec (`DecoderSpec.names`).
protocol ArchitectureFamily: Sendable {
    /// The config.json `model_type` values it reads.
    static var modelTypes: [String] { get }
    /// The transformers class in config.json's `architectures`, per model type.
    static func className(_ modelType: String) -> String
    /// The decoder config.json (`data`, at `path`) describes, every field range-checked.
    /// `common` holds the fields every family shares.
    static func spec(_ data: Data, common: CommonConfig, modelType: String, path: String) throws(ModelError) -> DecoderSpec
    /// The family's own config.json keys for a random checkpoint of `shape`.
    static func randomConfig(_ shape: RandomCheckpoint.Shape, modelType: String) -> [String: Any]
}

/// The registry of families, keyed by config.json's `model_type`.
public enum Architectures {
    static let families: [any ArchitectureFamily.Type] = [
        Mixtral.self, Qwen2MoE.self, Qwen3MoE.self, OLMoE.self, DeepSeek.self, GLM4MoE.self, GPTOSS.self,
        Llama.self, Mistral.self, Qwen2.self, Qwen3.self,
    ]

    /// Every `model_type` MoEKit runs.
    public static var modelTypes: [String] { families.flatMap { $0.modelTypes } }

    /// The family that reads `modelType`.
    static func family(_ modelType: String) -> (any ArchitectureFamily.Type)? {
        families.first { $0.modelTypes.contains(modelType) }
    }

    /// The spec for config.json at `path`.
    public static func spec(configAt path: String) throws(ModelError) -> DecoderSpec {
        guard let data = FileManager.default.contents(atPath: path) else { throw .io(path: path, reason: "cannot read config.json") }
        return try spec(configData: data, path: path)
    }

    /// The spec for config.json's bytes `data`; errors name `path`.
    public static func spec(configData data: Data, path: String) throws(ModelError) -> DecoderSpec {
        let common = try decodeConfig(CommonConfig.self, data, path: path)
        guard let type = common.modelType else {
            throw .invalidConfig(path: path, field: "model_type", reason: "missing; MoEKit runs \(modelTypes.joined(separator: ", "))")
        }
        guard let family = family(type) else { throw .unknownArchitecture(path: path, name: type) }
        var spec = try family.spec(data, common: common, modelType: type, path: path)
        if let r = spec.routerOverride {
            guard spec.isMoE else { throw .invalidConfig(path: path, field: "moekit_router", reason: "the model has no MoE layer") }
            _ = try routerOrThrow(r, experts: spec.experts, path: path)
        }
        spec.modelType = type
        try spec.checkSizes(path: path)
        return spec
    }
}

/// Checks a router config against the model, as a `ModelError` naming the field.
func routerOrThrow(_ r: RouterConfig, experts: Int, path: String) throws(ModelError) -> any Router {
    do {
        return try r.makeRouter(experts: experts, path: path)
    } catch {
        throw .invalidConfig(path: path, field: "moekit_router", reason: error.description)
    }
}
