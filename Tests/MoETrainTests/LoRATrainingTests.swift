import Foundation
import MoE
import MoECore
import MoEModels
import MoETrain
import _TestSupport
import XCTest

/// LoRA fine-tuning on a frozen checkpoint: the loss and every adapter gradient against PEFT on
/// PyTorch (scripts/make_lora_training_fixtures.py); adapters on the routed experts, the router
/// and the LM head against the gradient of the merged weight W + s B A, which the family
/// parity tests check against PyTorch; and a trained adapter saved in PEFT's format running in
/// inference as it trained, with the base untouched.
final class LoRATrainingTests: XCTestCase {
    let fixtures = trainFixture.deletingLastPathComponent()
    struct Reference: Decodable { var prompt: [Int], loss: Float }

    func checkAgainstPEFT(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = fixtures.appendingPathComponent("lora_train/\(name)")
        let ref = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: dir.appendingPathComponent("reference.json")))
        let model = try TrainableDecoder(directory: fixtures.appendingPathComponent(name).path)
        try model.attachLoRA(LoRAAdapterFolder(path: dir.path))
        let tape = Tape(pool: ThreadPool(threads: 2))
        let out = model.forward([Array(ref.prompt.dropLast())], targets: [Array(ref.prompt.dropFirst())], tape: tape,
                                aux: AuxLossCoefficients())
        XCTAssertEqual(out.loss.value.floats[0], ref.loss, accuracy: 1e-5, "\(name) loss", file: file, line: line)
        tape.backward(from: out.loss)
        let grads = try SafetensorsFile(path: dir.appendingPathComponent("gradients.safetensors").path)
        let named = try XCTUnwrap(model.lora).peftTensors { $0.grad }
        XCTAssertEqual(Set(named.map(\.name)), Set(grads.entries.keys), "\(name): adapter tensors", file: file, line: line)
        for (tensor, grad) in named {
            let expected = try grads.tensor(tensor).toFloats()
            let scale = expected.map(abs).max() ?? 0
            XCTAssertGreaterThan(scale, 0, tensor, file: file, line: line)
            assertClose(grad.toFloats(), expected, absolute: 1e-6 + 1e-4 * scale, "\(name): gradient of \(tensor)", file: file, line: line)
        }
        // The base is frozen: no weight has a gradient.
        XCTAssertTrue(model.namedVariables.values.allSatisfy { $0.grad == nil }, file: file, line: line)
    }

    /// Dropout keeps about 1 - p of the elements, scaled by 1 / (1 - p); the same seed draws the
    /// same mask, another seed another; the backward passes the gradient through the same mask.
    func testDropoutMaskIsSeededAndSharedWithTheBackward() {
        let n = 40_000, p: Float = 0.25
        let x = Variable(Tensor(shape: [n / 100, 100], values: (0..<n).map { Float($0 % 7) + 1 }))
        let tape = Tape(pool: ThreadPool(threads: 2))
        let y = tape.dropout(x, p: p, seed: 42)
        let again = tape.dropout(x, p: p, seed: 42).value.toFloats(), other = tape.dropout(x, p: p, seed: 43).value.toFloats()
        let ys = y.value.toFloats(), xs = x.value.toFloats()
        let kept = zip(ys, xs).filter { $0.0 != 0 }
        XCTAssertEqual(Double(kept.count) / Double(n), 0.75, accuracy: 0.01)
        XCTAssertTrue(kept.allSatisfy { abs($0.0 - $0.1 / (1 - p)) < 1e-5 })
        XCTAssertEqual(again, ys)
        XCTAssertNotEqual(other, ys)
        y.grad = Tensor(shape: x.shape, values: [Float](repeating: 1, count: n))
        tape.backward(from: Variable(Tensor(shape: [1], values: [0])), seed: 0)  // runs the recorded steps
        XCTAssertEqual(x.grad?.toFloats().map { $0 != 0 }, ys.map { $0 != 0 })
    }

    /// An op's output wants gradients only when an input does: a frozen embedding, norm and
    /// projections record no gradient for their outputs, while a LoRA on the projection still
    /// gets its A and B gradients (a LoRA run skips the first layer's input products).
    func testFrozenChainsWantNoGradients() {
        let tape = Tape(pool: ThreadPool(threads: 2))
        let table = Variable(Tensor(randomUniform: [10, 8], seed: 1), requiresGrad: false)
        let norm = Variable(Tensor(shape: [8], values: [Float](repeating: 1, count: 8)), requiresGrad: false)
        let w = Variable(Tensor(randomUniform: [6, 8], seed: 2), requiresGrad: false)
        let x = tape.rmsNorm(tape.embedding(table, ids: [1, 2, 3]), weight: norm, eps: 1e-6)
        let y = tape.linear(x, w), ys = tape.linears(x, [w, w]), dropped = tape.dropout(x, p: 0.1, seed: 1)
        XCTAssertFalse(x.requiresGrad || y.requiresGrad || ys.contains { $0.requiresGrad } || dropped.requiresGrad)
        let a = Variable(Tensor(randomUniform: [2, 8], seed: 3)), b = Variable(Tensor(randomUniform: [6, 2], seed: 4))
        let adapted = tape.lora(y, input: dropped, a: a, b: b, scale: 2)
        XCTAssertTrue(adapted.requiresGrad && tape.add(y, adapted).requiresGrad)
        adapted.grad = Tensor(shape: adapted.shape, values: [Float](repeating: 1, count: adapted.value.count))
        tape.backward(from: Variable(Tensor(shape: [1], values: [0])), seed: 0)
        XCTAssertNotNil(a.grad)
        XCTAssertNotNil(b.grad)
        XCTAssertTrue([x, y, dropped].allSatisfy { $0.grad == nil }, "no gradient flows into the frozen chain")
    }

    func testDenseLlamaGradientsEqualPEFT() throws { try checkAgainstPEFT("llama") }
    func testQwen2MoEWithRSLoRASharedExpertAndHeadEqualsPEFT() throws { try checkAgainstPEFT("qwen2_moe") }
    /// PEFT's `target_parameters` on transformers 5's stacked gate_up_proj and down_proj (each
    /// expert's gate and up rows share one A): loss and stacked gradients equal PEFT's.
    func testQwen3MoEStackedExpertParametersEqualPEFT() throws { try checkAgainstPEFT("qwen3_moe") }

    /// x y of 2-D tensors, either read transposed, in plain loops (in f64).
    func product(_ x: Tensor, _ y: Tensor, transposeA: Bool = false, transposeB: Bool = false) -> Tensor {
        let (m, k) = transposeA ? (x.shape[1], x.shape[0]) : (x.shape[0], x.shape[1])
        let n = transposeB ? y.shape[0] : y.shape[1]
        let xs = x.toFloats(), ys = y.toFloats()
        var out = [Float](repeating: 0, count: m * n)
        for i in 0..<m {
            for j in 0..<n {
                var sum = 0.0
                for c in 0..<k {
                    let a = transposeA ? xs[c * x.shape[1] + i] : xs[i * k + c]
                    let b = transposeB ? ys[j * k + c] : ys[c * n + j]
                    sum += Double(a) * Double(b)
                }
                out[i * n + j] = Float(sum)
            }
        }
        return Tensor(shape: [m, n], values: out)
    }

    /// Random B, so that both A and B have non-zero gradients.
    func randomizeB(_ lora: LoRAModules, seed: UInt64) {
        for (i, m) in lora.modules.enumerated() {
            m.b.value = Tensor(randomUniform: m.b.shape, in: -0.2...0.2, seed: seed &+ UInt64(i))
        }
    }

    /// Adapters on every projection (attention, router, shared and routed experts, LM head):
    /// with W' = W + s B A, the adapter's gradients are dA = s Bᵀ dW' and dB = s dW' Aᵀ, where
    /// dW' is the full model's gradient for W'.
    func checkAgainstMergedWeights(_ name: String, threads: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = fixtures.appendingPathComponent(name).path
        let adapted = try TrainableDecoder(directory: dir)
        var config = LoRAConfig()
        config.rank = 3
        config.alpha = 5
        config.targetModules = .allLinear
        try adapted.attachLoRA(config, seed: 7)
        let lora = try XCTUnwrap(adapted.lora)
        XCTAssertTrue(lora.modules.contains { $0.name.contains(".experts.") }, "\(name): routed experts adapted", file: file, line: line)
        randomizeB(lora, seed: 11)
        let merged = try TrainableDecoder(directory: dir)
        let weights = Dictionary(uniqueKeysWithValues: merged.namedVariables.map { ($0.key, $0.value) })
        for m in lora.modules {
            let w = try XCTUnwrap(weights[m.name + ".weight"])
            let delta = product(m.b.value, m.a.value)  // B A
            let p = w.value.mutableFloats, dp = delta.floats
            for i in 0..<p.count { p[i] += m.scale * dp[i] }
        }
        let tokens = [3, 17, 41, 9, 22, 5, 30, 12, 7, 50], targets = [17, 41, 9, 22, 5, 30, 12, 7, 50, 1]
        let pool = ThreadPool(threads: threads)
        var losses: [Float] = []
        for model in [adapted, merged] {
            let tape = Tape(pool: pool)
            let out = model.forward([tokens, tokens.reversed()], targets: [targets, targets.reversed()], tape: tape,
                                    aux: AuxLossCoefficients(loadBalance: 0.01, zLoss: 0.001))
            tape.backward(from: out.loss)
            losses.append(out.loss.value.floats[0])
        }
        XCTAssertEqual(losses[0], losses[1], accuracy: 1e-5, "\(name): loss", file: file, line: line)
        for m in lora.modules {
            guard let dW = weights[m.name + ".weight"]?.grad else {  // an expert no token chose: no gradient either way
                XCTAssertTrue(m.a.grad == nil && m.b.grad == nil, "\(name): \(m.name) has no weight gradient", file: file, line: line)
                continue
            }
            var dA = product(m.b.value, dW, transposeA: true).toFloats()  // Bᵀ dW'
            var dB = product(dW, m.a.value, transposeB: true).toFloats()  // dW' Aᵀ
            for i in dA.indices { dA[i] *= m.scale }
            for i in dB.indices { dB[i] *= m.scale }
            for (got, want, which) in [(m.a.grad, dA, "A"), (m.b.grad, dB, "B")] {
                let scale = want.map(abs).max() ?? 0
                assertClose(got?.toFloats() ?? [], want, absolute: 1e-6 + 1e-4 * scale, "\(name): d\(which) of \(m.name)", file: file, line: line)
            }
        }
    }

    /// The MoE op with `ExpertAdapters` on experts that share one frozen FFN (a MixLoRA mixture)
    /// equals the op on experts whose weights are the merged W + s B_e A_e: output, input and
    /// router-logit gradients, and the adapters' gradients by the identity above; on 1 and 2 threads.
    func testMixtureOfLoRAExpertsEqualsAnMoEOfMergedExperts() throws {
        for threads in [1, 2] {
            let (t, d, inner, e, r) = (12, 16, 8, 4, 2)
            var seed: UInt64 = 100
            func random(_ shape: [Int], _ range: ClosedRange<Float> = -0.5...0.5) -> Tensor {
                seed += 1
                return Tensor(randomUniform: shape, in: range, seed: seed)
            }
            let frozen = [random([inner, d]), random([inner, d]), random([d, inner])].map { Variable($0, requiresGrad: false) }
            let adapters = (0..<3).map { j in (0..<e).map { _ in
                (a: Variable(random([r, frozen[j].shape[1]])), b: Variable(random([frozen[j].shape[0], r])), scale: Float(1.5))
            } }
            let x = random([t, d]), logits = random([t, e], -2...2), dy = random([t, d])
            let pool = ThreadPool(threads: threads)
            func run(_ params: MoEParameters, _ with: ExpertAdapters?) -> (y: [Float], dx: [Float], dz: [Float]) {
                let tape = Tape(pool: pool), xv = Variable(x.copied()), zv = Variable(logits.copied())
                let step = tape.moe(xv, logits: zv, params, router: TopKSoftmaxRouter(experts: e, k: 2),
                                    aux: AuxLossCoefficients(loadBalance: 0.01, zLoss: 0.001), adapters: with)
                step.output.grad = dy.copied()
                tape.backward(from: Variable(Tensor(shape: [1], values: [0])), seed: 0)
                return (step.output.value.toFloats(), xv.grad?.toFloats() ?? [], zv.grad?.toFloats() ?? [])
            }
            let shared = MoEParameters(router: Variable(random([e, d])), gate: Array(repeating: frozen[0], count: e),
                                       up: Array(repeating: frozen[1], count: e), down: Array(repeating: frozen[2], count: e))
            let mixed = run(shared, ExpertAdapters(gate: adapters[0].map { $0 }, up: adapters[1].map { $0 }, down: adapters[2].map { $0 }))
            let merged = (0..<3).map { j in (0..<e).map { x -> Variable in
                let ba = product(adapters[j][x].b.value, adapters[j][x].a.value).toFloats()
                return Variable(Tensor(shape: frozen[j].shape, values: zip(frozen[j].value.toFloats(), ba).map { $0 + 1.5 * $1 }))
            } }
            let plain = run(MoEParameters(router: Variable(random([e, d])), gate: merged[0], up: merged[1], down: merged[2]), nil)
            assertClose(mixed.y, plain.y, absolute: 1e-5, "output, \(threads) threads")
            assertClose(mixed.dx, plain.dx, absolute: 1e-5, "dx, \(threads) threads")
            assertClose(mixed.dz, plain.dz, absolute: 1e-5, "router logits' gradient, \(threads) threads")
            for j in 0..<3 {
                for x in 0..<e {
                    let m = adapters[j][x]
                    guard let dW = merged[j][x].grad else { XCTAssertNil(m.a.grad); continue }
                    let dA = product(m.b.value, dW, transposeA: true).toFloats().map { $0 * 1.5 }
                    let dB = product(dW, m.a.value, transposeB: true).toFloats().map { $0 * 1.5 }
                    assertClose(m.a.grad?.toFloats() ?? [], dA, absolute: 1e-5, "dA projection \(j) expert \(x)")
                    assertClose(m.b.grad?.toFloats() ?? [], dB, absolute: 1e-5, "dB projection \(j) expert \(x)")
                }
            }
            XCTAssertTrue(frozen.allSatisfy { $0.grad == nil }, "the shared base stays frozen")
        }
    }

    /// Expert adapters with dropout: the masks change the output, and the backward is the
    /// derivative of the forward with the same masks (central differences along random
    /// directions of x and of each projection's A and B).
    func testExpertAdapterDropoutGradientsMatchFiniteDifferences() throws {
        let (t, d, inner, e, r) = (10, 12, 8, 3, 2)
        var seed: UInt64 = 300
        func random(_ shape: [Int], _ range: ClosedRange<Float> = -0.5...0.5) -> Tensor {
            seed += 1
            return Tensor(randomUniform: shape, in: range, seed: seed)
        }
        let frozen = [random([inner, d]), random([inner, d]), random([d, inner])].map { Variable($0, requiresGrad: false) }
        let a = (0..<3).map { j in random([r, frozen[j].shape[1]]) }, b = (0..<3).map { j in random([frozen[j].shape[0], r]) }
        let x0 = random([t, d]), logits = random([t, e], -2...2), weights = random([t, d])
        let params = MoEParameters(router: Variable(random([e, d])), gate: Array(repeating: frozen[0], count: e),
                                   up: Array(repeating: frozen[1], count: e), down: Array(repeating: frozen[2], count: e))
        // L = Σ y ⊙ weights, with expert 1's adapters (a, b) on every projection.
        func run(x: Tensor, a: [Tensor], b: [Tensor], dropout: (p: Float, seed: UInt64)?) -> (loss: Double, vars: [Variable], dx: [Float]) {
            let tape = Tape(pool: ThreadPool(threads: 2)), xv = Variable(x.copied())
            let vars = (0..<3).flatMap { [Variable(a[$0].copied()), Variable(b[$0].copied())] }
            func on(_ j: Int) -> [ExpertAdapters.Adapter?] { [nil, (vars[2 * j], vars[2 * j + 1], 1.25), nil] }
            let step = tape.moe(xv, logits: Variable(logits.copied()), params, router: TopKSoftmaxRouter(experts: e, k: 2),
                                adapters: ExpertAdapters(gate: on(0), up: on(1), down: on(2), dropout: dropout))
            step.output.grad = weights.copied()
            tape.backward(from: Variable(Tensor(shape: [1], values: [0])), seed: 0)
            let loss = zip(step.output.value.toFloats(), weights.toFloats()).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            return (loss, vars, xv.grad?.toFloats() ?? [])
        }
        let drop = (p: Float(0.3), seed: UInt64(77))
        XCTAssertNotEqual(run(x: x0, a: a, b: b, dropout: drop).loss, run(x: x0, a: a, b: b, dropout: nil).loss, "dropout acts")
        let base = run(x: x0, a: a, b: b, dropout: drop), eps: Float = 1e-2
        func along(_ t: Tensor, _ dir: Tensor, _ s: Float) -> Tensor {
            Tensor(shape: t.shape, values: zip(t.toFloats(), dir.toFloats()).map { $0 + s * $1 })
        }
        func dot(_ g: [Float], _ dir: Tensor) -> Double { zip(g, dir.toFloats()).reduce(0.0) { $0 + Double($1.0) * Double($1.1) } }
        for j in 0..<3 {
            for which in 0..<2 {
                let dir = random(which == 0 ? a[j].shape : b[j].shape)
                var (ap, am, bp, bm) = (a, a, b, b)
                if which == 0 { (ap[j], am[j]) = (along(a[j], dir, eps), along(a[j], dir, -eps)) }
                else { (bp[j], bm[j]) = (along(b[j], dir, eps), along(b[j], dir, -eps)) }
                let numeric = (run(x: x0, a: ap, b: bp, dropout: drop).loss - run(x: x0, a: am, b: bm, dropout: drop).loss) / Double(2 * eps)
                let analytic = dot(base.vars[2 * j + which].grad?.toFloats() ?? [], dir)
                XCTAssertEqual(analytic, numeric, accuracy: 1e-3 + 1e-2 * abs(numeric), "projection \(j) \(which == 0 ? "A" : "B")")
            }
        }
        let dir = random(x0.shape)
        let numeric = (run(x: along(x0, dir, eps), a: a, b: b, dropout: drop).loss - run(x: along(x0, dir, -eps), a: a, b: b, dropout: drop).loss)
            / Double(2 * eps)
        XCTAssertEqual(dot(base.dx, dir), numeric, accuracy: 1e-3 + 1e-2 * abs(numeric), "dx")
    }

    func testQwen2MoERoutedExpertAdaptersEqualMergedWeightGradients() throws {
        try checkAgainstMergedWeights("train_qwen2_moe", threads: 2)
    }
    func testMixtralExpertAdaptersEqualMergedWeightGradientsOnOneThread() throws {
        try checkAgainstMergedWeights("mixtral", threads: 1)
    }
}

/// `Trainer` with a `lora` section: only the adapters move, the checkpoint is a PEFT adapter
/// folder that inference loads to the logits training computes, and a stopped and resumed run
/// ends on the same adapter bytes as a straight one.
final class LoRATrainerTests: XCTestCase {
    /// A small random checkpoint of `arch` (d 32, 2 layers, 4 experts of 16, top-2; for a family
    /// with them, one leading dense layer of 48) written to `path`.
    func randomBase(_ arch: String, at path: String, dtype: DType = .f32) throws {
        var shape = RandomCheckpoint.Shape()
        (shape.vocabSize, shape.hiddenSize, shape.layers, shape.heads, shape.kvHeads) = (300, 32, 2, 2, 1)
        (shape.experts, shape.expertSize, shape.topK, shape.denseSize, shape.denseLayers) = (4, 16, 2, 48, 1)
        try RandomCheckpoint.write(arch: arch, shape: shape, to: path, seed: 3, dtype: dtype)
    }

    func testLoRARunSavesAPEFTAdapterThatInferenceRunsAsTrained() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-lora-run-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: root) }
        let base = root.appendingPathComponent("base").path
        try randomBase("qwen3_moe", at: base)
        let before = try Data(contentsOf: URL(fileURLWithPath: base + "/model.safetensors"))
        func config(_ run: String) throws -> TrainingConfig {
            let json = """
            {"from": "\(base)", "lora": {"rank": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj", "o_proj"]},
             "data": {"synthetic": {"level": 1}}, "steps": 6, "batch": 4, "seq_len": 16, "lr": 0.01, "warmup": 1,
             "checkpoint_dir": "\(root.appendingPathComponent(run).path)", "seed": 5}
            """
            return try JSONDecoder().decode(TrainingConfig.self, from: Data(json.utf8))
        }
        let pool = ThreadPool(threads: 2)
        let straight = try Trainer(config: config("a"), pool: pool)
        let lora = try XCTUnwrap(straight.model.lora)
        XCTAssertEqual(lora.modules.count, 6, "q, v and o of two layers")
        XCTAssertEqual(straight.model.trainableParameters.count, 12)
        let firstLoss = straight.trainStep().loss
        var last = firstLoss
        while straight.step < 6 { last = straight.trainStep().loss }
        XCTAssertLessThan(last, firstLoss, "the adapters learn")
        let runA = root.appendingPathComponent("a")
        try straight.save(to: runA)
        let folder = runA.appendingPathComponent("checkpoint")
        XCTAssertTrue(FileManager.default.fileExists(atPath: folder.appendingPathComponent("adapter_config.json").path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("model.safetensors").path))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: base + "/model.safetensors")), before, "the base is untouched")

        // Inference with the saved adapter gives the trained model's logits.
        let tokens = [72, 101, 108, 108, 111, 44, 32, 119]
        let trained = straight.model.forward([tokens], targets: [tokens], tape: Tape(pool: pool), aux: AuxLossCoefficients())
        let inference = try DecoderModel(path: base, adapters: [folder.path], pool: pool)
        var cache = inference.makeCache()
        assertClose(try inference.forward(tokens, cache: &cache).toFloats(), trained.logits.value.toFloats(), absolute: 1e-4,
                    "adapter in inference")
        let plain = try DecoderModel(path: base, pool: pool)
        var plainCache = plain.makeCache()
        let baseLogits = try plain.forward(tokens, cache: &plainCache).toFloats()
        XCTAssertGreaterThan(zip(baseLogits, trained.logits.value.toFloats()).map { abs($0 - $1) }.max() ?? 0, 1e-3, "the adapter changed the model")

        // Stop after 3 steps, resume in a new trainer: the same adapter as the straight run.
        let runB = root.appendingPathComponent("b")
        let first = try Trainer(config: config("b"), pool: pool)
        for _ in 0..<3 { first.trainStep() }
        try first.save(to: runB)
        let resumed = try Trainer(config: config("b"), pool: pool)
        try resumed.restore(from: runB)
        XCTAssertEqual(resumed.step, 3)
        while resumed.step < 6 { resumed.trainStep() }
        try resumed.save(to: runB)
        XCTAssertEqual(try Data(contentsOf: runB.appendingPathComponent("checkpoint/adapter_model.safetensors")),
                       try Data(contentsOf: folder.appendingPathComponent("adapter_model.safetensors")))
    }

    /// `target_parameters` on the stacked experts of a Qwen3-MoE and of a GPT-OSS (gate and up
    /// interleaved there), with q_proj: the experts' adapters learn, the saved PEFT adapter
    /// (stacked A and B, nested wrappers) runs in inference to the trained logits, a resumed run
    /// ends on the straight run's bytes, and data-parallel replicas (gate and up sharing each A)
    /// give the one-batch step's gradients.
    func testStackedExpertLoRATrainsSavesAndResumes() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-lora-stacked-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: root) }
        let pool = ThreadPool(threads: 2)
        for arch in ["qwen3_moe", "gpt_oss"] {
            let base = root.appendingPathComponent("\(arch)-base").path
            try randomBase(arch, at: base)
            func trainer(_ run: String, parallel: Bool = false, threads: Int = 2) throws -> Trainer {
                let json = """
                {"from": "\(base)", "lora": {"rank": 3, "alpha": 6, "target_modules": ["q_proj"],
                 "target_parameters": ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]},
                 "data": {"synthetic": {"level": 1}}, "steps": 6, "batch": 4, "seq_len": 16, "lr": 0.01, "warmup": 1,
                 "data_parallel": \(parallel), "checkpoint_dir": "\(root.appendingPathComponent(run).path)", "seed": 5}
                """
                return try Trainer(config: JSONDecoder().decode(TrainingConfig.self, from: Data(json.utf8)), pool: ThreadPool(threads: threads))
            }
            let straight = try trainer("a")
            let lora = try XCTUnwrap(straight.model.lora)
            XCTAssertEqual(lora.stacked.count, 2 * straight.model.layers.filter { $0.moe != nil }.count, arch)
            let down = try XCTUnwrap(lora.stacked.first { $0.parameter == .down })
            while straight.step < 6 { straight.trainStep() }
            XCTAssertTrue(down.b.contains { $0[0].value.toFloats().contains { $0 != 0 } }, "\(arch): the experts' B learn")
            let run = root.appendingPathComponent("a-\(arch)")
            try straight.save(to: run)
            let folder = run.appendingPathComponent("checkpoint")
            let saved = try LoRAAdapterFolder(path: folder.path)
            XCTAssertEqual(saved.stacked.count, lora.stacked.count, arch)
            let tokens = [72, 101, 108, 108, 111, 44, 32, 119]
            let trained = straight.model.forward([tokens], targets: [tokens], tape: Tape(pool: pool), aux: AuxLossCoefficients())
            let inference = try DecoderModel(path: base, adapters: [folder.path], pool: pool)
            var cache = inference.makeCache()
            assertClose(try inference.forward(tokens, cache: &cache).toFloats(), trained.logits.value.toFloats(), absolute: 1e-4, "\(arch) in inference")

            let runB = root.appendingPathComponent("b-\(arch)")
            let first = try trainer("b")
            for _ in 0..<3 { first.trainStep() }
            try first.save(to: runB)
            let resumed = try trainer("b")
            try resumed.restore(from: runB)
            while resumed.step < 6 { resumed.trainStep() }
            try resumed.save(to: runB)
            XCTAssertEqual(try Data(contentsOf: runB.appendingPathComponent("checkpoint/adapter_model.safetensors")),
                           try Data(contentsOf: folder.appendingPathComponent("adapter_model.safetensors")), "\(arch): resumed")

            let whole = try trainer("c", threads: 1), split = try trainer("d", parallel: true)
            _ = whole.computeGradients()
            _ = split.computeGradients()
            let mine = try XCTUnwrap(split.model.lora).peftTensors { $0.grad }, theirs = try XCTUnwrap(whole.model.lora).peftTensors { $0.grad }
            XCTAssertEqual(mine.map(\.name), theirs.map(\.name))
            for (x, y) in zip(mine, theirs) {
                let scale = y.tensor.toFloats().map(abs).max() ?? 0
                assertClose(x.tensor.toFloats(), y.tensor.toFloats(), absolute: 1e-7 + 1e-4 * scale, "\(arch) data parallel: \(x.name)")
            }
        }
    }

    /// MixLoRA and MoLE on a dense Llama and on the leading dense layer of a GLM-4.5 MoE (with attention
    /// LoRA beside): the routers and experts train, the saved adapter (MoEKit's MIXLORA format)
    /// runs in inference as an MoE of `LoRAExperts` to the logits training computes, and
    /// `moe merge` refuses it.
    func testMixLoRAAndMoLETrainSaveAndRunInInference() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-mixlora-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: root) }
        let pool = ThreadPool(threads: 2)
        for (arch, kind) in [("llama", "mixlora"), ("glm4_moe", "mole"), ("llama", "mole"), ("glm4_moe", "mixlora")] {
            let base = root.appendingPathComponent("\(arch)-base").path
            if !FileManager.default.fileExists(atPath: base) { try randomBase(arch, at: base) }
            let json = """
            {"from": "\(base)", "lora": {"kind": "\(kind)", "rank": 4, "alpha": 8, "experts": 4, "target_modules": ["q_proj", "v_proj"]},
             "data": {"synthetic": {"level": 1}}, "steps": 6, "batch": 4, "seq_len": 16, "lr": 0.01, "warmup": 1, "grad_accum": 2,
             "checkpoint_dir": "\(root.appendingPathComponent("run").path)", "seed": 5}
            """
            let trainer = try Trainer(config: JSONDecoder().decode(TrainingConfig.self, from: Data(json.utf8)), pool: pool)
            let lora = try XCTUnwrap(trainer.model.lora)
            let mixtures = lora.mixtures
            XCTAssertEqual(mixtures.count, arch == "llama" ? 2 : 1, "\(arch) \(kind): every dense FFN")
            let router = try XCTUnwrap(mixtures.values.first).router
            let before = router.value.toFloats()
            while trainer.step < 6 { trainer.trainStep() }
            XCTAssertNotEqual(router.value.toFloats(), before, "\(arch) \(kind): the router trains")
            let run = root.appendingPathComponent("run-\(arch)-\(kind)")
            try trainer.save(to: run)
            let folder = run.appendingPathComponent("checkpoint").path
            let tokens = [72, 101, 108, 108, 111, 44, 32, 119]
            let trained = trainer.model.forward([tokens], targets: [tokens], tape: Tape(pool: pool), aux: AuxLossCoefficients())
            let inference = try DecoderModel(path: base, adapters: [folder], pool: pool)
            var cache = inference.makeCache()
            assertClose(try inference.forward(tokens, cache: &cache).toFloats(), trained.logits.value.toFloats(), absolute: 1e-4,
                        "\(arch) \(kind) in inference")
            XCTAssertThrowsError(try LoRAMerge.merge(model: base, adapters: [folder], to: root.appendingPathComponent("merged").path)) {
                XCTAssertTrue("\($0)".contains("MIXLORA"), "\($0)")
            }
        }
    }

    /// LoRA on instruction data: conversations through a chat template (`data.chat_template`),
    /// the loss on the answers only, falls as the adapters train.
    func testLoRAOnInstructionConversations() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-lora-sft-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: root) }
        let base = root.appendingPathComponent("base").path
        try randomBase("qwen3_moe", at: base)
        let lines = (0..<20).map { i in
            #"{"messages": [{"role": "system", "content": "Echo."}, {"role": "user", "content": "echo \#(i)"}, {"role": "assistant", "content": "\#(i) \#(i)"}]}"#
        }
        let data = root.appendingPathComponent("chat.jsonl")
        try Data(lines.joined(separator: "\n").utf8).write(to: data)
        let template = trainFixture.deletingLastPathComponent().appendingPathComponent("chat_templates/templates/Qwen-Qwen2.5-7B-Instruct.jinja")
        let json = """
        {"from": "\(base)", "lora": {"rank": 8, "alpha": 16, "target_modules": "all-linear"},
         "data": {"jsonl": ["\(data.path)"], "chat_template": "\(template.path)"}, "steps": 12, "batch": 4, "seq_len": 128,
         "lr": 0.02, "warmup": 1, "checkpoint_dir": "\(root.appendingPathComponent("run").path)", "seed": 5}
        """
        let trainer = try Trainer(config: JSONDecoder().decode(TrainingConfig.self, from: Data(json.utf8)), pool: ThreadPool(threads: 2))
        let (_, targets) = trainer.batch(at: 0)
        XCTAssertTrue(targets.flatMap { $0 }.contains(-1) && targets.flatMap { $0 }.contains { $0 >= 0 }, "answers only")
        let first = trainer.trainStep().loss
        var last = first
        while trainer.step < 12 { last = trainer.trainStep().loss }
        XCTAssertLessThan(last, first * 0.8)
    }

    /// A bf16 checkpoint's frozen projections stay bf16 (half the memory) and give the loss and
    /// adapter gradients the same weights held in f32 give, routed experts included.
    func testBF16BaseTrainsAsItsF32Widening() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-lora-bf16-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: root) }
        let base = root.appendingPathComponent("base").path
        try randomBase("qwen3_moe", at: base, dtype: .bf16)
        var results: [(loss: Float, grads: [[Float]])] = []
        for dtype in [nil, "f32"] {
            let model = try TrainableDecoder(path: base)
            var config = LoRAConfig()
            (config.targetModules, config.baseDType) = (.allLinear, dtype)
            try model.attachLoRA(config, seed: 9)
            let lora = try XCTUnwrap(model.lora)
            for (i, m) in lora.modules.enumerated() { m.b.value = Tensor(randomUniform: m.b.shape, in: -0.1...0.1, seed: 50 + UInt64(i)) }
            let wq = model.layers[0].wq.value.dtype, expert = try XCTUnwrap(model.layers[0].moe).down[0].value.dtype
            XCTAssertEqual([wq, expert], dtype == nil ? [.bf16, .bf16] : [.f32, .f32], "stored dtype \(dtype ?? "(default)")")
            let tape = Tape(pool: ThreadPool(threads: 2))
            let tokens = [3, 17, 41, 9, 22, 5, 30, 12], targets = [17, 41, 9, 22, 5, 30, 12, 7]
            let out = model.forward([tokens], targets: [targets], tape: tape)
            tape.backward(from: out.loss)
            results.append((out.loss.value.floats[0], lora.namedVariables.map { $0.variable.grad?.toFloats() ?? [] }))
        }
        XCTAssertEqual(results[0].loss, results[1].loss, accuracy: 1e-5)
        for (a, b) in zip(results[0].grads, results[1].grads) {
            assertClose(a, b, absolute: 1e-6 + 1e-4 * (b.map(abs).max() ?? 0), "adapter gradient, bf16 base against f32")
        }
    }

    /// QLoRA: LoRA on a Q8_0 GGUF base keeps its projections in Q8_0 (each product widens its
    /// weight and drops it after) and trains to the loss and adapter gradients of the same
    /// weights widened to f32 once.
    func testQuantizedGGUFBaseTrainsInItsBlockFormat() throws {
        let gguf = trainFixture.deletingLastPathComponent().appendingPathComponent("gguf_models/qwen3_moe.q8_0.gguf").path
        var results: [(loss: Float, grads: [[Float]])] = []
        for stored in [true, false] {
            let model = try TrainableDecoder(path: gguf, frozenProjections: stored)
            var config = LoRAConfig()
            (config.targetModules, config.baseDType) = (.allLinear, stored ? nil : "f32")
            try model.attachLoRA(config, seed: 9)
            let lora = try XCTUnwrap(model.lora)
            for (i, m) in lora.modules.enumerated() { m.b.value = Tensor(randomUniform: m.b.shape, in: -0.1...0.1, seed: 50 + UInt64(i)) }
            XCTAssertEqual(try XCTUnwrap(model.layers[0].moe).gate[0].value.dtype, stored ? .q8_0 : .f32)
            let tape = Tape(pool: ThreadPool(threads: 2))
            let out = model.forward([[3, 17, 41, 9, 22, 5, 30, 12]], targets: [[17, 41, 9, 22, 5, 30, 12, 7]], tape: tape)
            tape.backward(from: out.loss)
            results.append((out.loss.value.floats[0], lora.namedVariables.map { $0.variable.grad?.toFloats() ?? [] }))
        }
        XCTAssertEqual(results[0].loss, results[1].loss, accuracy: 1e-5)
        for (a, b) in zip(results[0].grads, results[1].grads) {
            assertClose(a, b, absolute: 1e-6 + 1e-4 * (b.map(abs).max() ?? 0), "adapter gradient, Q8_0 base against its widening")
        }
    }
}
