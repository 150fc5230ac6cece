import Foundation
import MoE
import MoECore
import MoEModels
import MoETrain
import _TestSupport
import XCTest

let trainFixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures").appendingPathComponent("train_step")

/// One training step against PyTorch, the training forward against the inference path, and a
/// short run that must learn.
final class TrainingParityTests: XCTestCase {
    struct Reference: Decodable {
        var inputIds: [[Int]], targets: [[Int]], loss: Float
        enum CodingKeys: String, CodingKey { case inputIds = "input_ids", targets, loss }
    }

    func fixtureModel() throws -> TrainableDecoder {
        let s = TrainableDecoder.Shape(vocabSize: 64, hiddenSize: 32, layers: 2, heads: 4, kvHeads: 2, experts: 4, expertSize: 16)
        let model = TrainableDecoder(shape: s, router: TopKSoftmaxRouter(experts: 4, k: 2), seed: 0)
        let ck = try Checkpoint(directory: trainFixture.path)
        try model.load { name in try ck.tensor(name) }
        return model
    }

    /// Same weights, same batch as scripts/make_train_fixture.py: the loss within 1e-5 and every
    /// gradient within 1e-4 of the largest gradient of its tensor (plus 1e-6).
    func testOneStepMatchesPyTorch() throws {
        let ref = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: trainFixture.appendingPathComponent("reference.json")))
        let model = try fixtureModel()
        let tape = Tape(pool: ThreadPool(threads: 2))
        let out = model.forward(ref.inputIds, targets: ref.targets, tape: tape, aux: AuxLossCoefficients())
        XCTAssertEqual(out.loss.value.floats[0], ref.loss, accuracy: 1e-5)
        tape.backward(from: out.loss)
        let grads = try SafetensorsFile(path: trainFixture.appendingPathComponent("grads.safetensors").path)
        let variables = model.namedVariables
        XCTAssertEqual(Set(variables.keys), Set(grads.entries.keys))
        for (name, v) in variables {
            let expected = try grads.tensor(name).toFloats()
            let scale = expected.map(abs).max() ?? 0
            assertClose(v.grad?.toFloats() ?? [], expected, absolute: 1e-6 + 1e-4 * scale, "gradient of \(name)")
        }
    }

    /// The training forward and `DecoderModel` on the saved checkpoint give the same logits.
    func testSavedCheckpointRunsTheSameInInference() throws {
        let model = try fixtureModel()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-train-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try SafetensorsWriter.write(model.namedTensors, to: dir.appendingPathComponent("model.safetensors").path)
        try JSONSerialization.data(withJSONObject: model.configJSON()).write(to: dir.appendingPathComponent("config.json"))
        let inference = try DecoderModel(directory: dir.path)
        let tokens = [5, 9, 33, 2, 41, 17]
        var cache = inference.makeCache()
        let expected = try inference.forward(tokens, cache: &cache).toFloats()
        let out = model.forward([tokens], targets: [tokens], tape: Tape(pool: ThreadPool(threads: 1)))
        assertClose(out.logits.value.toFloats(), expected, absolute: 1e-4)
    }

    /// Models trained with DeepSeek-V3's sigmoid router (per-layer bias, groups, routed scaling) and with
    /// AdaMoE's null experts (a router of E + M rows) save checkpoints whose `moekit_router`
    /// makes inference route, and so compute, the same.
    func testOtherRoutersCheckpointsRunTheSameInInference() throws {
        var sigmoid = RouterConfig(name: "topk-sigmoid")
        sigmoid.k = 3
        sigmoid.nGroup = 2
        sigmoid.topkGroup = 1
        sigmoid.routedScaling = 2
        sigmoid.bias = [0.1, -0.1, 0.2, 0, 0.05, -0.2]
        var null = RouterConfig(name: "null-experts")
        null.k = 3
        null.nullExperts = 4
        for rc in [sigmoid, null] {
            let s = TrainableDecoder.Shape(vocabSize: 40, hiddenSize: 16, layers: 2, heads: 2, kvHeads: 1, experts: 6, expertSize: 8)
            let model = TrainableDecoder(shape: s, router: try rc.makeRouter(experts: 6), seed: 11)
            if rc.name == "topk-sigmoid" {  // each layer's own bias, as training leaves them
                XCTAssertEqual(model.layers[0].routerBias, rc.bias)
                // Large enough to decide the choice: one expert always, one never, per layer.
                model.layers[0].routerBias = [2, -2, 0.2, 0, 0.05, -0.4]
                model.layers[1].routerBias = [-2, 0.4, 0, 2, -0.3, 0.2]
            }
            let inference = try savedAndLoaded(model, routerConfig: rc)
            let tokens = [5, 9, 33, 2, 39, 17, 0]
            var cache = inference.makeCache()
            let expected = try inference.forward(tokens, cache: &cache).toFloats()
            let out = model.forward([tokens], targets: [tokens], tape: Tape(pool: ThreadPool(threads: 1)))
            assertClose(out.logits.value.toFloats(), expected, absolute: 1e-4, rc.name)
        }
    }

    /// A small model learns to repeat a pattern: the loss falls below a tenth of where it began.
    func testShortTrainingRunLearns() {
        let s = TrainableDecoder.Shape(vocabSize: 16, hiddenSize: 32, layers: 1, heads: 2, kvHeads: 1, experts: 4, expertSize: 32)
        let model = TrainableDecoder(shape: s, router: TopKSoftmaxRouter(experts: 4, k: 2), seed: 3)
        let opt = AdamW(weightDecay: 0)
        let seq = [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8]
        var first: Float = 0, last: Float = 0
        for step in 0..<60 {
            let tape = Tape(pool: ThreadPool(threads: 2))
            let out = model.forward([Array(seq.dropLast())], targets: [Array(seq.dropFirst())], tape: tape)
            if step == 0 { first = out.loss.value.floats[0] }
            last = out.loss.value.floats[0]
            for p in model.parameters { p.variable.grad = nil }
            tape.backward(from: out.loss)
            clipGradients(model.parameters.map(\.variable), maxNorm: 1)
            opt.update(model.parameters, lr: 1e-2)
        }
        XCTAssertLessThan(last, first / 10, "loss \(first) -> \(last)")
    }
}

/// Saves `model` as `moe train` does (safetensors and config.json) in a temporary folder and
/// loads it for inference (the folder is removed at once: a mapped file stays readable after unlinking).
func savedAndLoaded(_ model: TrainableDecoder, routerConfig: RouterConfig?) throws -> DecoderModel {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-train-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    try SafetensorsWriter.write(model.namedTensors, to: dir.appendingPathComponent("model.safetensors").path)
    try JSONSerialization.data(withJSONObject: model.configJSON(routerConfig: routerConfig))
        .write(to: dir.appendingPathComponent("config.json"))
    return try DecoderModel(directory: dir.path)
}
