import Foundation
import MoECore

/// A Hugging Face checkpoint folder: `config.json`, the weights as one `model.safetensors` or
/// shards listed in `model.safetensors.index.json`, and optionally `tokenizer.json`. Without
/// either, every `*.safetensors` file is read, and a tensor name found in two of them is an
/// error (other files, such as saved gradients, never shadow the model's tensors).
/// DESIGN.md, "A model DIR".
///
/// Every tensor is a zero-copy view of its memory-mapped file, in its stored dtype.
public final class Checkpoint: @unchecked Sendable {
    public let directory: String
    /// Which file holds each tensor.
    public let files: [String: SafetensorsFile]
    /// The QMoE dictionary once read (every layer's coded experts share it).
    let ternaryDictionaryMemo = Memo<TernaryDictionary?>()

    public init(directory: String) throws(ModelError) {
        self.directory = directory
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: directory, isDirectory: &isDir), isDir.boolValue else {
            throw .io(path: directory, reason: "not a folder")
        }
        let indexPath = (directory as NSString).appendingPathComponent("model.safetensors.index.json")
        var shardNames: [String]
        var weightMap: [String: String] = [:]
        if fm.fileExists(atPath: indexPath) {
            guard let data = fm.contents(atPath: indexPath),
                  let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw .invalidFile(path: indexPath, field: "(json)", reason: "not a JSON object")
            }
            guard let map = json["weight_map"] as? [String: String] else {
                throw .invalidFile(path: indexPath, field: "weight_map", reason: "missing or not an object of strings")
            }
            weightMap = map
            shardNames = Array(Set(map.values)).sorted()
        } else if fm.fileExists(atPath: (directory as NSString).appendingPathComponent("model.safetensors")) {
            shardNames = ["model.safetensors"]
        } else {
            let listed = (try? fm.contentsOfDirectory(atPath: directory)) ?? []
            shardNames = listed.filter { $0.hasSuffix(".safetensors") }.sorted()
        }
        guard !shardNames.isEmpty else { throw .io(path: directory, reason: "no *.safetensors weights") }
        var opened: [String: SafetensorsFile] = [:]
        for name in shardNames {
            let path = (directory as NSString).appendingPathComponent(name)
            guard fm.fileExists(atPath: path) else {
                throw .invalidFile(path: indexPath, field: "weight_map", reason: "names shard '\(name)', which is not there")
            }
            opened[name] = try SafetensorsFile(path: path)
        }
        var files: [String: SafetensorsFile] = [:]
        for shard in shardNames {
            guard let file = opened[shard] else { continue }
            for name in file.entries.keys {
                if let other = files[name], weightMap[name] == nil {
                    throw .invalidFile(path: file.path, field: name, reason: "also in \(other.path); which one is meant?")
                }
                if weightMap[name] == nil || weightMap[name] == shard { files[name] = file }
            }
        }
        for (tensor, shard) in weightMap where files[tensor] == nil {
            throw .missingTensor(path: (directory as NSString).appendingPathComponent(shard), name: tensor)
        }
        self.files = files
    }

    /// Every tensor name.
    public var names: [String] { Array(files.keys).sorted() }

    /// Whether the checkpoint has `name`.
    public func has(_ name: String) -> Bool { files[name] != nil || mxfp4Source(name) != nil }

    /// The tensor `name`, checked against `shape` when given.
    public func tensor(_ name: String, shape: [Int]?) throws(ModelError) -> Tensor {
        if files[name] == nil, let t = try mxfp4Tensor(name, shape: shape) { return t }
        guard let file = files[name] else { throw .missingTensor(path: directory, name: name) }
        let t = try file.tensor(name)
        if let shape, t.shape != shape { throw .wrongShape(path: file.path, name: name, expected: shape, found: t.shape) }
        return t
    }


    /// `config.json` of this folder.
    public var configPath: String { (directory as NSString).appendingPathComponent("config.json") }
}
