import Foundation
import MoE
import MoECore

extension DecoderModel {
    /// Runs each dense FFN that `adapter` turns into a mixture of LoRA experts (MixLoRA, MoLE:
    /// `LoRAAdapterFolder.Mixture`) as an MoE layer: its linear router, top-k of a softmax
    /// renormalised, and `LoRAExperts` sharing the FFN's weights. Typed errors name the adapter's
    /// file and tensor: a mixture on a module that is not a dense FFN of this model, or LoRA
    /// experts whose shapes or scales do not fit.
    func installMixtures(of adapter: LoRAAdapterFolder) throws(ModelError) {
        let weightsPath = (adapter.path as NSString).appendingPathComponent("adapter_model.safetensors")
        for module in adapter.mixtures.keys.sorted() {
            guard let m = adapter.mixtures[module] else { continue }
            let routerName = "base_model.model.\(module).lora_router.weight"
            guard let i = layers.indices.first(where: { spec.names.denseFFN($0) == module }),
                  case let .dense(gate, up, down) = layers[i].ffn else {
                throw .invalidFile(path: weightsPath, field: routerName, reason: "\(module) is not a dense FFN of this \(spec.modelType)")
            }
            let e = m.router.shape[0]
            guard m.router.shape[1] == spec.hiddenSize else {
                throw .invalidFile(path: weightsPath, field: routerName, reason: "shape \(m.router.shape), expected [\(e), \(spec.hiddenSize)]")
            }
            let all = (m.gate + m.up + m.down).compactMap { $0 }
            guard let scale = all.first?.scale, all.allSatisfy({ $0.scale == scale }) else {
                throw .invalidFile(path: weightsPath, field: "\(module).lora_experts", reason: "no LoRA experts, or experts of different scales")
            }
            func adapters(_ modules: [LoRAAdapterFolder.Module?], _ weight: Tensor, _ projection: String) throws(ModelError) -> [LoRAAdapter?] {
                var out: [LoRAAdapter?] = []
                for (x, module) in modules.enumerated() {
                    guard let module else { out.append(nil); continue }
                    guard module.a.shape[1] == weight.shape[1], module.b.shape[0] == weight.shape[0], !module.isEmbedding else {
                        throw .invalidFile(path: weightsPath, field: "\(m.module).lora_experts.\(x).\(projection)",
                                           reason: "A \(module.a.shape) and B \(module.b.shape) do not fit the weight \(weight.shape)")
                    }
                    out.append(LoRAAdapter(a: module.a.converted(to: .f32), b: module.b.converted(to: .f32)))
                }
                return out
            }
            let experts = LoRAExperts(baseGate: gate, baseUp: up, baseDown: down, gateAdapters: try adapters(m.gate, gate, "gate_proj"),
                                      upAdapters: try adapters(m.up, up, "up_proj"), downAdapters: try adapters(m.down, down, "down_proj"),
                                      scale: scale)
            let layer = MoELayer(gate: .linear(weight: m.router.converted(to: .f32), bias: m.routerBias?.converted(to: .f32)),
                                 router: TopKSoftmaxRouter(experts: e, k: m.topK, renormalize: true), experts: experts)
            layers[i] = Layer(inputNorm: layers[i].inputNorm, postNorm: layers[i].postNorm, attention: layers[i].attention, ffn: .moe(layer))
        }
    }
}
