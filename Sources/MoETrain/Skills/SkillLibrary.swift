import Foundation
import MoECore
import MoEModels

/// A folder of LoRA skills (`moe skills`): each entry `<library>/<name>/` holds a PEFT adapter
/// folder's files and `skill.json` (name, tags, the base model's fingerprint, the training
/// data's hash). Entries are added whole (copied to a temporary folder, then renamed).
public struct SkillLibrary: Sendable {
    /// One entry's metadata (`skill.json`).
    public struct Skill: Codable, Sendable, Equatable {
        public var name: String
        public var tags: [String]
        /// `SkillLibrary.fingerprint` of the base the adapter was trained on.
        public var base: String
        /// 64-bit FNV-1a of the training data file, when one was given.
        public var dataHash: String?
        enum CodingKeys: String, CodingKey { case name, tags, base, dataHash = "data_hash" }
    }

    public let path: String
    public init(path: String) { self.path = path }

    /// Every entry, by name.
    public func skills() throws(ModelError) -> [Skill] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: path) else { return [] }
        var out: [Skill] = []
        for name in names.sorted() where !name.hasPrefix(".") {
            let file = folder(of: name) + "/skill.json"
            guard let data = FileManager.default.contents(atPath: file) else { continue }
            guard let skill = try? JSONDecoder().decode(Skill.self, from: data) else {
                throw .invalidFile(path: file, field: "(json)", reason: "not a skill entry (name, tags, base)")
            }
            out.append(skill)
        }
        return out
    }

    /// The folder of entry `name`.
    public func folder(of name: String) -> String { (path as NSString).appendingPathComponent(name) }

    /// Adds the adapter folder `adapter`, trained on `base`, as `name`: it must load (a PEFT
    /// LoRA or MoEKit MIXLORA adapter) and every module it adapts must be in the base.
    public func add(adapter: String, name: String, base: String, tags: [String], data: String?) throws(ModelError) {
        guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }), !name.hasPrefix(".") else {
            throw .invalidConfig(path: path, field: "--name", reason: "'\(name)' must be letters, digits, '-', '_' or '.'")
        }
        let target = folder(of: name)
        guard !FileManager.default.fileExists(atPath: target) else { throw .io(path: target, reason: "already in the library") }
        _ = try DecoderModel(path: base, adapters: [adapter])  // the adapter fits the base, or a typed error names it
        var dataHash: String? = nil
        if let data { dataHash = try Self.hash(file: data) }
        let skill = Skill(name: name, tags: tags, base: try Self.fingerprint(base: base), dataHash: dataHash)
        let temporary = (path as NSString).appendingPathComponent(".adding-\(name)-\(getpid())")
        do {
            try FileManager.default.createDirectory(atPath: temporary, withIntermediateDirectories: true)
            for file in ["adapter_config.json", "adapter_model.safetensors"] {
                try FileManager.default.copyItem(atPath: (adapter as NSString).appendingPathComponent(file),
                                                 toPath: (temporary as NSString).appendingPathComponent(file))
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(skill).write(to: URL(fileURLWithPath: temporary).appendingPathComponent("skill.json"))
            try FileManager.default.moveItem(atPath: temporary, toPath: target)
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            throw .io(path: target, reason: "cannot add: \(systemReason(error))")
        }
    }

    /// The entries trained on `base`; an entry named in `only` that was trained on another base
    /// is refused, naming it.
    public func skills(for base: String, only: [String]? = nil) throws(ModelError) -> [Skill] {
        let print = try Self.fingerprint(base: base), all = try skills()
        if let only {
            var out: [Skill] = []
            for name in only {
                guard let s = all.first(where: { $0.name == name }) else { throw .io(path: folder(of: name), reason: "no such skill in the library") }
                guard s.base == print else {
                    throw .invalidFile(path: folder(of: name) + "/skill.json", field: "base",
                                       reason: "trained on another base (\(s.base)), not \(base) (\(print))")
                }
                out.append(s)
            }
            return out
        }
        return all.filter { $0.base == print }
    }

    /// A base model's fingerprint: 64-bit FNV-1a over its config (config.json, or a GGUF's
    /// metadata through the weights' names) and every tensor's name and shape.
    public static func fingerprint(base: String) throws(ModelError) -> String {
        let (weights, spec) = try DecoderModel.weightSource(path: base)
        var h = FNV1a()
        h.add("\(spec.modelType) \(spec.vocabSize) \(spec.hiddenSize) \(spec.layers)")
        for name in weights.names.sorted() { h.add(name + "\(try weights.tensor(name).shape)") }
        return h.hex
    }

    /// 64-bit FNV-1a of a file's bytes.
    public static func hash(file: String) throws(ModelError) -> String {
        guard let data = FileManager.default.contents(atPath: file) else { throw .io(path: file, reason: "cannot read the training data") }
        var h = FNV1a()
        h.add(data)
        return h.hex
    }
}

/// 64-bit FNV-1a.
struct FNV1a {
    var value: UInt64 = 0xcbf2_9ce4_8422_2325
    mutating func add<S: Sequence>(_ bytes: S) where S.Element == UInt8 {
        for b in bytes { value = (value ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
    }
    mutating func add(_ s: String) { add(s.utf8) }
    var hex: String { String(value, radix: 16) }
}
