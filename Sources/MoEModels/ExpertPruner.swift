import Foundation
import MoECore

/// Writes a smaller checkpoint with some routed experts removed (`moe prune`): the kept experts
/// of each MoE layer renumbered from 0 in their old order, their router rows (and DeepSeek-V3's
/// selection biases) sliced to match, config.json's expert count set to the new number, and
/// every other tensor and file copied as stored. The result is a Hugging Face folder that
/// MoEKit and transformers load; it computes what `--skip-experts` computes on the original
/// (for softmax routers, exactly; checked against transformers with the experts deleted).
public enum ExpertPruner {
    /// config.json keys that hold the routed-expert count, across the families.
    static let expertCountKeys = ["num_local_experts", "num_experts", "n_routed_experts"]
    /// Writes `source` (a checkpoint folder) without the experts `skipped[layer]` to the folder
    /// `out` (created atomically: written beside it, then renamed). Every MoE layer must lose the
    /// same number of experts, since config.json holds one count.
    public static func prune(source: Checkpoint, spec: DecoderSpec, skipped: [Int: Set<Int>], out: String) throws(ModelError) {
        let moe = (0..<spec.layers).filter { spec.moeLayers[$0] }
        let keptCounts = Set(moe.map { spec.experts - (skipped[$0]?.count ?? 0) })
        guard keptCounts.count == 1, let kept = keptCounts.first else {
            throw .invalidConfig(path: out, field: "--keep", reason: "every MoE layer must keep as many experts (config.json holds one count); use --per-layer")
        }
        guard kept >= spec.topK else {
            throw .invalidConfig(path: out, field: "--keep", reason: "\(kept) experts cannot serve the checkpoint's \(spec.topK) experts per token")
        }
        try checkGroups(skipped, experts: spec.experts, groups: spec.groups, out: out)
        guard !FileManager.default.fileExists(atPath: out) else { throw .io(path: out, reason: "already exists; pruning does not overwrite") }
        if let packed = source.names.first(where: { $0.hasSuffix("_blocks") || $0.hasSuffix("_scales") }) {
            throw .unsupportedDType(path: source.directory, name: packed, dtype: "MXFP4 (pruning writes f32, f16 and bf16 checkpoints)")
        }

        var tensors: [(name: String, tensor: Tensor)] = []
        var written = Set<String>()
        let n = spec.names
        func copy(_ name: String) throws(ModelError) {
            guard !written.contains(name), source.has(name) else { return }
            tensors.append((name, try source.tensor(name)))
            written.insert(name)
        }
        func select(_ name: String, _ rows: [Int]) throws(ModelError) {
            guard source.has(name) else { return }
            tensors.append((name, selectingRows(try source.tensor(name), rows)))
            written.insert(name)
        }
        var renamed = Set<String>()
        for i in moe {
            let keep = (0..<spec.experts).filter { !(skipped[i]?.contains($0) ?? false) }
            try select(n.routerWeight(i), keep)
            try select(n.routerBias(i), keep)
            try select(n.correctionBias(i), keep)
            if n.stackedLayout == .interleavedInputMajor {
                let st = n.stackedExperts(i)
                for name in [st.gateUp, st.down, st.gateUpBias, st.downBias] { try select(name, keep) }
            } else {
                for (newID, oldID) in keep.enumerated() {
                    let from = n.expert(i, oldID), to = n.expert(i, newID)
                    for (a, b) in [(from.gate, to.gate), (from.up, to.up), (from.down, to.down)] where source.has(a) {
                        tensors.append((b, try source.tensor(a)))
                        written.insert(b)
                    }
                }
                for e in 0..<spec.experts {
                    let x = n.expert(i, e)
                    renamed.formUnion([x.gate, x.up, x.down])
                }
            }
        }
        for name in source.names where !written.contains(name) && !renamed.contains(name) { try copy(name) }

        try CheckpointFolderWriter.write(out: out, copyingFrom: source.directory) { (temporary: String) throws(ModelError) in
            try SafetensorsWriter.write(tensors, metadata: ["format": "pt"], to: (temporary as NSString).appendingPathComponent("model.safetensors"))
            try writeConfig(from: source.configPath, experts: kept, to: (temporary as NSString).appendingPathComponent("config.json"))
        }
    }

    /// Group-limited routing takes a layer's experts as `groups` contiguous groups of equal size,
    /// so every group must lose as many experts (and keep two, for DeepSeek-V3's top-two group
    /// score).
    static func checkGroups(_ skipped: [Int: Set<Int>], experts: Int, groups: Int, out: String) throws(ModelError) {
        guard groups > 1 else { return }
        let size = experts / groups
        for (layer, skip) in skipped {
            let lost = Set((0..<groups).map { g in skip.filter { $0 / size == g }.count })
            guard lost.count == 1, let n = lost.first, size - n >= 2 || n == 0 else {
                throw .invalidConfig(path: out, field: "--keep", reason: "layer \(layer): each of the \(groups) expert groups must keep as many experts, at least 2 (keep a multiple of \(groups))")
            }
        }
    }

    /// config.json with every expert-count key set to `experts`. The file is edited as text, so
    /// every other value keeps its exact spelling (transformers rejects `0` where a config
    /// field is a float, which a JSON round trip would write for `0.0`).
    static func writeConfig(from path: String, experts: Int, to target: String) throws(ModelError) {
        guard let data = FileManager.default.contents(atPath: path), var text = String(data: data, encoding: .utf8),
              (try? JSONSerialization.jsonObject(with: data)) is [String: Any] else {
            throw .invalidFile(path: path, field: "(json)", reason: "not a JSON object")
        }
        var found = false
        for key in expertCountKeys {
            guard let regex = try? NSRegularExpression(pattern: "(\"\(key)\"\\s*:\\s*)[0-9]+") else { continue }
            let range = NSRange(text.startIndex..., in: text)
            if regex.firstMatch(in: text, range: range) != nil {
                text = regex.stringByReplacingMatches(in: text, range: range, withTemplate: "$1\(experts)")
                found = true
            }
        }
        guard found else { throw .invalidConfig(path: path, field: expertCountKeys.joined(separator: "/"), reason: "no expert count to change") }
        try AtomicFile.write(Data(text.utf8), to: target)
    }

    /// An owned copy of `t` with only `rows` (indices along the first dimension), in order.
    static func selectingRows(_ t: Tensor, _ rows: [Int]) -> Tensor {
        var shape = t.shape
        shape[0] = rows.count
        let out = Tensor(uninitialized: shape, dtype: t.dtype)
        let rowBytes = t.byteCount / max(1, t.shape[0])
        for (k, r) in rows.enumerated() {
            (out.mutableRawPointer + k * rowBytes).copyMemory(from: t.rawPointer + r * rowBytes, byteCount: rowBytes)
        }
        return out
    }
}

extension ExpertPruner {
    /// `prune` for a GGUF file (any stored types: an expert's slab of a stacked `*_exps` tensor
    /// is whole blocks, so experts are cut out byte for byte without requantizing): the router
    /// (`ffn_gate_inp`), its bias, DeepSeek-V3's `exp_probs_b` and every stacked expert tensor
    /// of each MoE layer keep the kept experts' rows; `<arch>.expert_count` becomes the new
    /// count; every other record and tensor is copied. Written atomically to the file `out`.
    public static func prune(source: GGUFFile, skipped: [Int: Set<Int>], out: String) throws(ModelError) {
        let arch = source.metadata["general.architecture"]?.string ?? ""
        let countKey = "\(arch).expert_count"
        guard let experts = source.metadata[countKey]?.int, experts > 0 else {
            throw .invalidFile(path: source.path, field: countKey, reason: "missing: not an MoE file")
        }
        let keptCounts = Set(skipped.values.map { experts - $0.count })
        guard keptCounts.count <= 1 else {
            throw .invalidConfig(path: out, field: "--keep", reason: "every MoE layer must keep as many experts (the file holds one count); use --per-layer")
        }
        let kept = keptCounts.first ?? experts
        if let used = source.metadata["\(arch).expert_used_count"]?.int, kept < used {
            throw .invalidConfig(path: out, field: "--keep", reason: "\(kept) experts cannot serve the file's \(used) experts per token")
        }
        try checkGroups(skipped, experts: experts, groups: source.metadata["\(arch).expert_group_count"]?.int ?? 1, out: out)
        guard !FileManager.default.fileExists(atPath: out) else { throw .io(path: out, reason: "already exists; pruning does not overwrite") }

        var records: [GGUFWriter.Record] = source.records.filter { $0.key != countKey && !GGUFFile.splitKeys.contains($0.key) }.map {
            .copied(key: $0.key, bytes: Data(source.recordBytes($0)))
        }
        records.append(.value(key: countKey, .u32(UInt32(kept))))
        var entries: [GGUFWriter.TensorEntry] = []
        for name in source.tensorNames {
            guard let info = source.tensors[name] else { continue }
            var rows: [Int]?
            if name.hasPrefix("blk."), let layer = Int(name.dropFirst(4).prefix { $0 != "." }), let skip = skipped[layer],
               info.shape.first == experts, name.contains("_exps.") || name.contains(".ffn_gate_inp.") || name.contains(".exp_probs_b.") {
                rows = (0..<experts).filter { !skip.contains($0) }
            }
            var shape = info.shape
            if let rows { shape[0] = rows.count }
            entries.append(GGUFWriter.TensorEntry(name: name, shape: shape, dtype: info.dtype) { (sink: AtomicFile.Sink) throws(ModelError) in
                let t = try source.tensor(name)
                guard let rows else { return try sink.write(UnsafeRawBufferPointer(start: t.rawPointer, count: t.byteCount)) }
                let slab = t.byteCount / experts
                for r in rows { try sink.write(UnsafeRawBufferPointer(start: t.rawPointer + r * slab, count: slab)) }
            })
        }
        try GGUFWriter.write(to: out, records: records, tensors: entries, alignment: source.alignment)
    }
}
