import Foundation
import _TestSupport
import XCTest

/// End-to-end: runs the built `moe` executable and checks its output and exit status.
final class CLITests: XCTestCase {
    /// Runs `moe` with `arguments`; returns its exit status, standard output and standard error.
    func moe(_ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
        try runMoe(arguments)
    }

    /// The ids and text of `generate --json` output (without its timings).
    func answer(_ json: String) throws -> [String] {
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        return ["\(object["ids"] ?? "")", "\(object["text"] ?? "")", "\(object["stop_reason"] ?? "")"]
    }

    func testVersionAndHelp() throws {
        let version = try moe(["--version"])
        XCTAssertEqual(version.status, 0)
        XCTAssertEqual(version.out.trimmingCharacters(in: .whitespacesAndNewlines), "0.1.0")
        let help = try moe(["--help"])
        XCTAssertEqual(help.status, 0)
        XCTAssertTrue(help.out.contains("bench-kernels"))
    }

    func testBenchKernelsPrintsTheContractKeys() throws {
        let run = try moe(["bench-kernels", "--quick", "--threads", "2"])
        XCTAssertEqual(run.status, 0, run.err)
        let object = try JSONSerialization.jsonObject(with: Data(run.out.utf8)) as? [String: Any]
        let json = try XCTUnwrap(object)
        for key in ["read_bandwidth_gbs", "fma_peak_gflops", "matvec", "matmul", "grouped_matmul"] {
            XCTAssertNotNil(json[key], "missing \(key)")
        }
        let matvec = try XCTUnwrap((json["matvec"] as? [[String: Any]])?.first)
        for key in ["rows", "cols", "dtype", "gbs"] { XCTAssertNotNil(matvec[key], "matvec lacks \(key)") }
        let matmul = try XCTUnwrap((json["matmul"] as? [[String: Any]])?.first)
        for key in ["m", "n", "k", "dtype", "gflops"] { XCTAssertNotNil(matmul[key], "matmul lacks \(key)") }
        let grouped = try XCTUnwrap((json["grouped_matmul"] as? [[String: Any]])?.first)
        for key in ["experts", "tokens", "top_k", "rows", "cols", "gflops"] {
            XCTAssertNotNil(grouped[key], "grouped_matmul lacks \(key)")
        }
    }

    func testBadOptionsExitNonZeroWithAMessage() throws {
        let zero = try moe(["bench-kernels", "--threads", "0"])
        XCTAssertNotEqual(zero.status, 0)
        XCTAssertTrue(zero.err.contains("--threads"), zero.err)
        let bogus = try moe(["bench-kernels", "--only", "bogus"])
        XCTAssertNotEqual(bogus.status, 0)
        XCTAssertTrue(bogus.err.contains("bogus"), bogus.err)
        // Sizes from outside are bounded before anything is allocated (they used to abort or trap).
        let model = fixtures.appendingPathComponent("gguf_models/qwen3_moe.q8_0.gguf").path
        for (args, option) in [(["generate", "--model", model, "--max-tokens", "1000000000000", "hi"], "--max-tokens"),
                               (["bench", "--model", model, "--gen-tokens", "9223372036854775807"], "--gen-tokens"),
                               (["bench", "--model", model, "--prompt-tokens", "0"], "--prompt-tokens"),
                               (["generate", "--model", model, "--threads", "1000", "hi"], "--threads"),
                               (["logits", "--model", model, "--tokens", "1", "--threads", "-3"], "--threads"),
                               (["quantize", "--model", model, "--type", "q8_0", "--out", "/tmp/x.gguf", "--threads", "100000"], "--threads")] {
            let r = try moe(args)
            XCTAssertNotEqual(r.status, 0, "\(args)")
            XCTAssertTrue(r.err.contains(option) && !r.err.contains("crashed"), "\(args): \(r.err)")
        }
    }

    func temp(_ text: String, extension ext: String = "json") throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-\(UUID().uuidString).\(ext)").path
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    func testRoutePrintsTheContract() throws {
        let logits = try temp("[[2, 1, 0, -1], [0, 0, 3, 0], [1, 1, 1, 1]]")
        let run = try moe(["route", "--router", "topk-softmax", "--logits", logits, "--k", "2"])
        XCTAssertEqual(run.status, 0, run.err)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(run.out.utf8)) as? [String: Any])
        let tokens = try XCTUnwrap(json["tokens"] as? [[String: Any]])
        XCTAssertEqual(tokens.count, 3)
        XCTAssertEqual(tokens[1]["experts"] as? [Int], [2, 0])
        XCTAssertEqual(tokens[2]["experts"] as? [Int], [0, 1], "ties go to the lower id")
        XCTAssertEqual(tokens[0]["dropped"] as? Bool, false)
        let weights = try XCTUnwrap(tokens[0]["weights"] as? [Double])
        XCTAssertEqual(weights[0], exp(2) / (exp(2) + exp(1)), accuracy: 1e-6)
        let losses = try XCTUnwrap(json["aux_losses"] as? [String: Double])
        XCTAssertNotNil(losses["load_balance"])
        XCTAssertNotNil(losses["z_loss"])
    }

    func testRouteOptionsReachTheRouter() throws {
        let logits = try temp("[[3, 0], [1, 0], [4, 0], [2, 0]]")
        let run = try moe(["route", "--router", "switch", "--logits", logits, "--capacity-factor", "1", "--drop-by", "score"])
        XCTAssertEqual(run.status, 0, run.err)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(run.out.utf8)) as? [String: Any])
        let tokens = try XCTUnwrap(json["tokens"] as? [[String: Any]])
        XCTAssertEqual(tokens.map { $0["dropped"] as? Bool }, [false, true, false, true])

        let sig = try temp("[[0.5, 0.1, 0.4, 0.3]]")
        let bias = try temp("[0, 0, 0, 1]")
        let grouped = try moe(["route", "--router", "topk-sigmoid", "--logits", sig, "--k", "1", "--n-group", "2",
                               "--topk-group", "1", "--bias-file", bias, "--routed-scaling", "2", "--no-renormalize"])
        XCTAssertEqual(grouped.status, 0, grouped.err)
        let g = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(grouped.out.utf8)) as? [String: Any])
        let chosen = try XCTUnwrap((g["tokens"] as? [[String: Any]])?.first)
        XCTAssertEqual(chosen["experts"] as? [Int], [3], "the bias lifts expert 3 and its group")
        let w = try XCTUnwrap(chosen["weights"] as? [Double])
        XCTAssertEqual(w[0], 2 / (1 + exp(-0.3)), accuracy: 1e-5, "weight is the unbiased sigmoid, scaled")

        let nulls = try temp("[[3, 2, 5, 0], [0, 0, 5, 5]]")
        let n = try moe(["route", "--router", "null-experts", "--logits", nulls, "--null-experts", "2", "--k", "2"])
        XCTAssertEqual(n.status, 0, n.err)
        let nj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(n.out.utf8)) as? [String: Any])
        XCTAssertEqual((nj["tokens"] as? [[String: Any]])?.map { $0["experts"] as? [Int] }, [[0], []])
    }

    func testRouteReadsAJSONConfig() throws {
        let logits = try temp("[[3, 0], [1, 0], [4, 0], [2, 0]]")
        let path = try temp(#"{"name": "switch", "capacity_factor": 1, "drop_by": "score"}"#)
        let run = try moe(["route", "--config", path, "--logits", logits])
        XCTAssertEqual(run.status, 0, run.err)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(run.out.utf8)) as? [String: Any])
        XCTAssertEqual((json["tokens"] as? [[String: Any]])?.map { $0["dropped"] as? Bool }, [false, true, false, true])
    }

    func testRouteReadsATOMLConfig() throws {
        let logits = try temp("[[3, 0], [1, 0], [4, 0], [2, 0]]")
        let path = try temp("name = \"switch\"\ncapacity_factor = 1\ndrop_by = \"score\" # lowest scores drop\n", extension: "toml")
        let run = try moe(["route", "--config", path, "--logits", logits])
        XCTAssertEqual(run.status, 0, run.err)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(run.out.utf8)) as? [String: Any])
        XCTAssertEqual((json["tokens"] as? [[String: Any]])?.map { $0["dropped"] as? Bool }, [false, true, false, true])
        let bad = try moe(["route", "--config", try temp("name = \"switch\"\ncapacity_factor = = 1\n", extension: "toml"), "--logits", logits])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.err.contains(".toml") && bad.err.contains("line 2"), bad.err)
    }

    func testRouteBadInputExitsNonZeroNamingFileAndField() throws {
        let ragged = try temp("[[1, 2], [3]]")
        let r = try moe(["route", "--router", "top-p", "--logits", ragged])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains(ragged) && r.err.contains("token 1"), r.err)
        let good = try temp("[[1, 2, 3]]")
        let unknown = try moe(["route", "--router", "nope", "--logits", good])
        XCTAssertNotEqual(unknown.status, 0)
        XCTAssertTrue(unknown.err.contains("nope"), unknown.err)
        let tooMany = try moe(["route", "--router", "topk-softmax", "--logits", good, "--k", "4"])
        XCTAssertNotEqual(tooMany.status, 0)
        XCTAssertTrue(tooMany.err.contains("k"), tooMany.err)
        let badBias = try temp("[1, 2]")
        let bias = try moe(["route", "--router", "topk-sigmoid", "--logits", good, "--bias-file", badBias])
        XCTAssertNotEqual(bias.status, 0)
        XCTAssertTrue(bias.err.contains(badBias) && bias.err.contains("bias"), bias.err)
        let missing = try moe(["route", "--router", "topk-softmax", "--logits", "/nonexistent/z.json"])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.err.contains("/nonexistent/z.json"), missing.err)
        let dropBy = try moe(["route", "--router", "switch", "--logits", good, "--drop-by", "age"])
        XCTAssertNotEqual(dropBy.status, 0)
    }

    var fixtures: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")
    }

    func testLogitsMatchTransformers() throws {
        let folder = fixtures.appendingPathComponent("qwen2_moe")
        let ref = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("reference.json"))) as? [String: Any])
        let prompt = try XCTUnwrap(ref["prompt"] as? [Int])
        let expected = try XCTUnwrap(ref["logits"] as? [[Double]])
        let run = try moe(["logits", "--model", folder.path, "--tokens", prompt.map(String.init).joined(separator: ","), "--threads", "2"])
        XCTAssertEqual(run.status, 0, run.err)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(run.out.utf8)) as? [String: Any])
        XCTAssertEqual(json["tokens"] as? [Int], prompt)
        let logits = try XCTUnwrap(json["logits"] as? [[Double]])
        XCTAssertEqual(logits.count, prompt.count)
        for (row, want) in zip(logits, expected) {
            for (a, b) in zip(row, want) { XCTAssertEqual(a, b, accuracy: 1e-4) }
        }
    }

    func testLogitsBadInput() throws {
        let folder = fixtures.appendingPathComponent("mixtral").path
        let bad = try moe(["logits", "--model", folder, "--tokens", "1,x"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.err.contains("--tokens"), bad.err)
        let range = try moe(["logits", "--model", folder, "--tokens", "1,4096"])
        XCTAssertNotEqual(range.status, 0)
        XCTAssertTrue(range.err.contains("4096"), range.err)
        let missing = try moe(["logits", "--model", "/nonexistent/model", "--tokens", "1"])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.err.contains("/nonexistent/model"), missing.err)
    }

    func testInitRandomGenerateTokenizeAndBench() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-cli-\(UUID().uuidString)").path
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        let made = try moe(["init-random", "--arch", "qwen2_moe", "--out", dir, "--vocab", "300", "--hidden", "32", "--layers", "2",
                            "--experts", "4", "--top-k", "2", "--expert-size", "16", "--shared-size", "24"])
        XCTAssertEqual(made.status, 0, made.err)
        for file in ["config.json", "model.safetensors", "tokenizer.json"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: (dir as NSString).appendingPathComponent(file)), file)
        }
        let tok = try moe(["tokenize", "--model", dir, "--text", "héllo"])
        XCTAssertEqual(tok.status, 0, tok.err)
        XCTAssertEqual(try JSONSerialization.jsonObject(with: Data(tok.out.utf8)) as? [String: [Int]], ["ids": [104, 195, 169, 108, 108, 111]])
        let detok = try moe(["detokenize", "--model", dir, "--ids", "104,195,169,108,108,111"])
        XCTAssertEqual(try JSONSerialization.jsonObject(with: Data(detok.out.utf8)) as? [String: String], ["text": "héllo"])
        let gen = try moe(["generate", "--model", dir, "--prompt", "hi", "--max-tokens", "5", "--json"])
        XCTAssertEqual(gen.status, 0, gen.err)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(gen.out.utf8)) as? [String: Any])
        XCTAssertNotNil(json["ids"] as? [Int])
        XCTAssertNotNil(json["text"] as? String)
        let again = try moe(["generate", "--model", dir, "--prompt", "hi", "--max-tokens", "5", "--json"])
        XCTAssertEqual(try answer(again.out), try answer(gen.out), "greedy is deterministic")
        let sampled = try moe(["generate", "--model", dir, "--prompt", "hi", "--max-tokens", "5", "--temperature", "0.8",
                               "--top-k", "20", "--top-p", "0.9", "--min-p", "0.01", "--seed", "3", "--json"])
        XCTAssertEqual(sampled.status, 0, sampled.err)
        // 18 tokens: two windows of the windowed probe (16 and 2).
        let bench = try moe(["bench", "--model", dir, "--prompt-tokens", "8", "--gen-tokens", "18", "--reps", "1", "--threads", "2"])
        XCTAssertEqual(bench.status, 0, bench.err)
        let b = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(bench.out.utf8)) as? [String: Any])
        for key in ["prefill_tokens_per_s", "decode_tokens_per_s", "peak_rss_bytes"] { XCTAssertNotNil(b[key], key) }
        for key in ["read_bandwidth_windowed_gbs", "decode_fraction_of_windowed_bandwidth", "decode_fraction_of_sampled_bandwidth"] {
            let value = try XCTUnwrap(b[key] as? Double, key)
            XCTAssertTrue(value.isFinite && value > 0, "\(key) \(value)")
        }
        let serial = try XCTUnwrap(b["decode_serial_fraction"] as? Double)
        XCTAssertTrue(serial >= 0 && serial <= 1, "decode_serial_fraction \(serial)")
        XCTAssertEqual(b["precision"] as? String, "exact", "a checkpoint folder's default arithmetic")
        let bad = try moe(["generate", "--model", dir, "--prompt", "hi", "--top-p", "2"])
        XCTAssertNotEqual(bad.status, 0)
        let badArch = try moe(["init-random", "--arch", "gpt2", "--out", dir + "-x"])
        XCTAssertNotEqual(badArch.status, 0)
        XCTAssertTrue(badArch.err.contains("gpt2"), badArch.err)
    }

    func trainConfig(_ dir: String, steps: Int = 6) -> String {
        """
        {"model": {"hidden_size": 16, "layers": 1, "heads": 2, "kv_heads": 1, "experts": 4, "expert_size": 16},
         "router": {"name": "topk-softmax", "k": 2}, "data": {"synthetic": {"level": 2}},
         "steps": \(steps), "batch": 2, "seq_len": 16, "lr": 0.003, "warmup": 2,
         "eval_interval": 3, "eval_samples": 6, "checkpoint_interval": 3, "checkpoint_dir": "\(dir)", "seed": 5}
        """
    }

    func testTrainLogsEvaluatesCheckpointsAndResumesExactly() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-train-\(UUID().uuidString)").path
        addTeardownBlock { try? FileManager.default.removeItem(atPath: root) }
        let a = try temp(trainConfig(root + "/a")), b = try temp(trainConfig(root + "/b"))
        let straight = try moe(["train", "--config", a, "--quiet"])
        XCTAssertEqual(straight.status, 0, straight.err)
        let log = try String(contentsOfFile: root + "/a/log.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(log.count, 2, "an evaluation every 3 steps")
        let first = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(log[0].utf8)) as? [String: Any])
        XCTAssertEqual(first["step"] as? Int, 3)
        XCTAssertNotNil(first["accuracy"] as? [String: Double])
        XCTAssertNotNil(first["experts_per_token"] as? [String: Double])
        // Stopped after 3 steps and resumed: the same weights, byte for byte.
        XCTAssertEqual(try moe(["train", "--config", b, "--quiet", "--stop-after", "3"]).status, 0)
        let resumed = try moe(["train", "--config", b, "--quiet", "--resume"])
        XCTAssertEqual(resumed.status, 0, resumed.err)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: root + "/a/checkpoint/model.safetensors")),
                       try Data(contentsOf: URL(fileURLWithPath: root + "/b/checkpoint/model.safetensors")))
        // --evaluate scores the last checkpoint without training.
        let eval = try moe(["train", "--config", a, "--evaluate", "--eval-samples", "12"])
        XCTAssertEqual(eval.status, 0, eval.err)
        let scored = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(eval.out.utf8)) as? [String: Any])
        XCTAssertEqual(scored["step"] as? Int, 6)
        XCTAssertEqual(scored["samples"] as? Int, 12)
        XCTAssertEqual((scored["accuracy"] as? [String: Double])?.count, 6, "every task scored")
        // The checkpoint is a model folder generate runs.
        let gen = try moe(["generate", "--model", root + "/a/checkpoint", "--prompt", "1+1=", "--max-tokens", "4", "--json"])
        XCTAssertEqual(gen.status, 0, gen.err)
    }

    /// `moe train --from`: a Qwen3-MoE, a dense Llama, a GPT-OSS and a DeepSeek-V3 written by init-random train from their
    /// weights with their own tokenizer; the checkpoint keeps the family, and a stop and resume
    /// reaches the same weights as a straight run.
    func testTrainFromACheckpointOfAnotherFamily() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-from-\(UUID().uuidString)").path
        addTeardownBlock { try? FileManager.default.removeItem(atPath: root) }
        for arch in ["qwen3_moe", "llama", "gpt_oss", "deepseek_v3"] {
            let base = "\(root)/\(arch)-base"
            let made = try moe(["init-random", "--arch", arch, "--out", base, "--vocab", "300", "--hidden", "32", "--layers", "2",
                                "--heads", "2", "--kv-heads", "1", "--experts", "4", "--expert-size", "16", "--dense-size", "32"])
            XCTAssertEqual(made.status, 0, made.err)
            // A config without a model section: the checkpoint's own shape and router are kept.
            func config(_ run: String) throws -> String {
                try temp("""
                {"data": {"synthetic": {"level": 1}}, "steps": 6, "batch": 2, "seq_len": 16, "lr": 0.003, "warmup": 2,
                 "eval_interval": 6, "eval_samples": 4, "checkpoint_interval": 3, "checkpoint_dir": "\(root)/\(run)", "seed": 2}
                """)
            }
            let a = try config("\(arch)-a"), b = try config("\(arch)-b")
            let straight = try moe(["train", "--config", a, "--from", base, "--quiet"])
            XCTAssertEqual(straight.status, 0, straight.err)
            XCTAssertEqual(try moe(["train", "--config", b, "--from", base, "--quiet", "--stop-after", "3"]).status, 0)
            let resumed = try moe(["train", "--config", b, "--from", base, "--quiet", "--resume"])
            XCTAssertEqual(resumed.status, 0, resumed.err)
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: "\(root)/\(arch)-a/checkpoint/model.safetensors")),
                           try Data(contentsOf: URL(fileURLWithPath: "\(root)/\(arch)-b/checkpoint/model.safetensors")), arch)
            let saved = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(root)/\(arch)-a/checkpoint/config.json"))) as? [String: Any])
            XCTAssertEqual(saved["model_type"] as? String, arch)
            XCTAssertNil(saved["moekit_router"], "the family's own router is kept")
            let gen = try moe(["generate", "--model", "\(root)/\(arch)-a/checkpoint", "--prompt", "copy:ab=", "--max-tokens", "4", "--json"])
            XCTAssertEqual(gen.status, 0, gen.err)
        }
        // A folder that is not a checkpoint, and one without its tokenizer: exit 1, naming the file.
        let bare = "\(root)/bare"
        try FileManager.default.copyItem(atPath: "\(root)/llama-base", toPath: bare)
        try FileManager.default.removeItem(atPath: bare + "/tokenizer.json")
        let plain = try temp(#"{"data": {"synthetic": {"level": 1}}, "steps": 2, "checkpoint_dir": "/tmp/moekit-never-written"}"#)
        let noTokenizer = try moe(["train", "--config", plain, "--from", bare])
        XCTAssertEqual(noTokenizer.status, 1)
        XCTAssertTrue(noTokenizer.err.contains("tokenizer.json"), noTokenizer.err)
        let missing = try moe(["train", "--config", plain, "--from", root + "/nothing"])
        XCTAssertEqual(missing.status, 1)
        XCTAssertTrue(missing.err.contains("nothing"), missing.err)
    }

    /// `moe train --from` with a `lora` section on an OLMoE (every linear projection, routed
    /// experts too): the checkpoint is a PEFT adapter folder, which `logits --adapter` and
    /// `merge` take, and the merged model gives the adapter's logits (f32 weights: a bf16 merge rounds W + s B A).
    func testLoRAFineTuneThenAdapterAndMerge() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-lora-cli-\(UUID().uuidString)").path
        addTeardownBlock { try? FileManager.default.removeItem(atPath: root) }
        let base = "\(root)/base"
        let made = try moe(["init-random", "--arch", "olmoe", "--out", base, "--vocab", "300", "--hidden", "32", "--layers", "2",
                            "--heads", "2", "--kv-heads", "2", "--experts", "4", "--expert-size", "16", "--dtype", "f32"])
        XCTAssertEqual(made.status, 0, made.err)
        let cfg = try temp("""
        {"lora": {"rank": 4, "alpha": 8, "target_modules": "all-linear"},
         "data": {"synthetic": {"level": 1}}, "steps": 4, "batch": 2, "seq_len": 16, "lr": 0.01, "warmup": 1,
         "eval_interval": 4, "eval_samples": 2, "checkpoint_dir": "\(root)/run", "seed": 2}
        """)
        let trained = try moe(["train", "--config", cfg, "--from", base, "--quiet"])
        XCTAssertEqual(trained.status, 0, trained.err)
        let adapter = "\(root)/run/checkpoint"
        XCTAssertTrue(FileManager.default.fileExists(atPath: adapter + "/adapter_model.safetensors"))
        let adapted = try moe(["logits", "--model", base, "--adapter", adapter, "--tokens", "5,9,33,2"])
        XCTAssertEqual(adapted.status, 0, adapted.err)
        XCTAssertEqual(try moe(["merge", "--model", base, "--adapter", adapter, "--out", "\(root)/merged"]).status, 0)
        let merged = try moe(["logits", "--model", "\(root)/merged", "--tokens", "5,9,33,2"])
        XCTAssertEqual(merged.status, 0, merged.err)
        let plain = try moe(["logits", "--model", base, "--tokens", "5,9,33,2"])
        func values(_ out: String) throws -> [Float] {
            let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any])
            return try XCTUnwrap(json["logits"] as? [[Double]]).flatMap { $0.map(Float.init) }
        }
        assertClose(try values(merged.out), try values(adapted.out), absolute: 1e-3, "merged equals adapted")
        XCTAssertGreaterThan(zip(try values(plain.out), try values(adapted.out)).map { abs($0 - $1) }.max() ?? 0, 1e-3)
    }

    /// `model.arch` trains a fresh model of any family (init-random's weights, the byte vocabulary):
    /// the checkpoint keeps the family and runs.
    func testTrainFromScratchAnyFamily() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-fresh-\(UUID().uuidString)").path
        addTeardownBlock { try? FileManager.default.removeItem(atPath: root) }
        for arch in ["qwen2_moe", "deepseek_v2", "glm4_moe", "mistral"] {
            let cfg = try temp("""
            {"model": {"arch": "\(arch)", "hidden_size": 32, "layers": 2, "heads": 2, "kv_heads": 1, "experts": 4,
                       "expert_size": 16, "dense_size": 32, "dense_layers": 1},
             "data": {"synthetic": {"level": 1}}, "steps": 4, "batch": 2, "seq_len": 16, "lr": 0.003, "warmup": 2,
             "eval_interval": 4, "eval_samples": 4, "checkpoint_interval": 4, "checkpoint_dir": "\(root)/\(arch)", "seed": 2}
            """)
            let run = try moe(["train", "--config", cfg, "--quiet"])
            XCTAssertEqual(run.status, 0, "\(arch): \(run.err)")
            let saved = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(root)/\(arch)/checkpoint/config.json"))) as? [String: Any])
            XCTAssertEqual(saved["model_type"] as? String, arch)
            let gen = try moe(["generate", "--model", "\(root)/\(arch)/checkpoint", "--prompt", "1+1=", "--max-tokens", "3", "--json"])
            XCTAssertEqual(gen.status, 0, gen.err)
        }
        let bad = try temp(#"{"model": {"arch": "gpt3"}, "checkpoint_dir": "/tmp/moekit-never-written"}"#)
        let r = try moe(["train", "--config", bad])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.err.contains("model.arch"), r.err)
    }

    func testTrainBadConfigsFailNamingTheField() throws {
        let bad = try temp(#"{"model": {"hidden_size": 30, "heads": 4}, "checkpoint_dir": "/tmp/x"}"#)
        let r = try moe(["train", "--config", bad])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("model"), r.err)
        let router = try temp(#"{"router": {"name": "recurrent", "rnn_hidden_size": 0}, "checkpoint_dir": "/tmp/moekit-never-written"}"#)
        let n = try moe(["train", "--config", router])
        XCTAssertNotEqual(n.status, 0)
        XCTAssertTrue(n.err.contains("rnn_hidden_size"), n.err)
        let empty = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-empty-\(UUID().uuidString)").path
        addTeardownBlock { try? FileManager.default.removeItem(atPath: empty) }
        let noCheckpoint = try moe(["train", "--config", try temp(trainConfig(empty)), "--resume"])
        XCTAssertNotEqual(noCheckpoint.status, 0)
        XCTAssertTrue(noCheckpoint.err.contains("checkpoint"), noCheckpoint.err)
        // Sizes from outside are bounded before anything is allocated (Int.max ran forever or aborted).
        for (field, edit) in [("batch", #""batch": 9223372036854775807"#), ("seq_len", #""seq_len": 9223372036854775807"#),
                              ("threads", #""threads": 64"#), ("data.synthetic.level", #""data": {"synthetic": {"level": 100000000}}"#),
                              ("data.synthetic.held_out", #""data": {"synthetic": {"held_out": 2}}"#)] {
            let r = try moe(["train", "--config", try temp("{\(edit), \"checkpoint_dir\": \"/tmp/moekit-never-written\"}")])
            XCTAssertNotEqual(r.status, 0, field)
            XCTAssertTrue(r.err.contains(field) && !r.err.contains("crashed"), "\(field): \(r.err)")
        }
        // An empty or uncreatable checkpoint folder names the field (was a raw NSError dump).
        for dir in ["", "/proc/moekit-cannot-create"] {
            let r = try moe(["train", "--config", try temp(#"{"steps": 1, "checkpoint_dir": "\#(dir)"}"#)])
            XCTAssertNotEqual(r.status, 0, dir)
            XCTAssertTrue(r.err.contains("checkpoint_dir") && !r.err.contains("NSCocoaErrorDomain"), r.err)
        }
    }

    func testGeneratePromptAsArgumentOrOption() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-gen-\(UUID().uuidString)").path
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        XCTAssertEqual(try moe(["init-random", "--arch", "olmoe", "--out", dir, "--vocab", "300", "--hidden", "32", "--layers", "1",
                                "--experts", "4", "--expert-size", "16"]).status, 0)
        let positional = try moe(["generate", "--model", dir, "hi", "--max-tokens", "3", "--json"])
        let option = try moe(["generate", "--model", dir, "--prompt", "hi", "--max-tokens", "3", "--json"])
        XCTAssertEqual(positional.status, 0, positional.err)
        XCTAssertEqual(try answer(positional.out), try answer(option.out))
        XCTAssertNotEqual(try moe(["generate", "--model", dir, "hi", "--prompt", "hi"]).status, 0, "both forms at once")
        XCTAssertNotEqual(try moe(["generate", "--model", dir]).status, 0, "no prompt")
    }

    /// The embedded default model (Sources/moe/DefaultModel, trained by `moe train` with its
    /// train.json) answers the README's example and another held-in-range sum.
    func testDefaultModelAddsWithoutAModelFolder() throws {
        let run = try moe(["generate", "37+48="])
        XCTAssertEqual(run.status, 0, run.err)
        XCTAssertEqual(run.out.trimmingCharacters(in: .whitespacesAndNewlines), "85")
        let json = try moe(["generate", "--json", "the cat says"])
        let report = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.out.utf8)) as? [String: Any])
        XCTAssertEqual(report["text"] as? String, " meow.")
        XCTAssertEqual(report["stop_reason"] as? String, "stop_string")
    }

    func testQuantizeWritesAFileThatRunsAndRejectsBadOptions() throws {
        let source = fixtures.appendingPathComponent("gguf_models/qwen3_moe.f32.gguf").path
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-cli-q-\(getpid()).gguf").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let dry = try moe(["quantize", "--model", source, "--type", "q4_k_m", "--out", out, "--dry-run"])
        XCTAssertEqual(dry.status, 0, dry.err)
        XCTAssertTrue(dry.out.contains("blk.1.ffn_down_exps.weight") && dry.out.contains("-> q5_0"), dry.out)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), "a dry run writes nothing")
        let run = try moe(["quantize", "--model", source, "--type", "Q8_0", "--out", out, "--tensor-type", "attn_q=q4_0"])
        XCTAssertEqual(run.status, 0, run.err)
        XCTAssertTrue(run.err.contains("100%") && run.err.contains("wrote"), run.err)
        let logits = try moe(["logits", "--model", out, "--tokens", "1,2,3"])
        XCTAssertEqual(logits.status, 0, logits.err)
        for bad in [["--type", "q3_xl"], ["--type", "q8_0", "--tensor-type", "attn_q"], ["--type", "q8_0", "--tensor-type", "attn_q=iq2_xxs"],
                    ["--type", "q8_0", "--tensor-type", "(=q8_0"]] {
            let r = try moe(["quantize", "--model", source, "--out", out + ".bad"] + bad)
            XCTAssertNotEqual(r.status, 0, "\(bad)")
            XCTAssertTrue(r.err.contains("--type") || r.err.contains("--tensor-type"), r.err)
        }
        let missing = try moe(["quantize", "--model", "/nonexistent.gguf", "--type", "q8_0", "--out", out + ".bad"])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.err.contains("/nonexistent.gguf"), missing.err)
        // A split set: its files named, and the first runs; a size that is not one, or an --out
        // not ending in .gguf, is refused naming the option.
        let prefix = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-cli-split-\(getpid())").path
        let split = try moe(["quantize", "--model", source, "--type", "q8_0", "--out", prefix + ".gguf", "--split-max-size", "100KB"])
        let files = (1...2).map { String(format: "%@-%05d-of-00002.gguf", prefix, $0) }
        defer { for f in files { try? FileManager.default.removeItem(atPath: f) } }
        XCTAssertEqual(split.status, 0, split.err)
        XCTAssertTrue(files.allSatisfy { split.err.contains("wrote \($0)") }, split.err)
        let setLogits = try moe(["logits", "--model", files[0], "--tokens", "1,2,3"])
        XCTAssertEqual(setLogits.status, 0, setLogits.err)
        XCTAssertTrue(setLogits.out.contains("\"logits\""), setLogits.out)
        for bad in [["--split-max-size", "0"], ["--split-max-size", "lots"], ["--split-max-size", "1MB", "--out", prefix + ".bin"]] {
            var args = ["quantize", "--model", source, "--type", "q8_0", "--out", prefix + "-bad.gguf"] + bad
            if bad.contains("--out") { args = ["quantize", "--model", source, "--type", "q8_0"] + bad }
            let r = try moe(args)
            XCTAssertNotEqual(r.status, 0, "\(bad)")
            XCTAssertTrue(r.err.contains("--split-max-size"), r.err)
        }
        let left = try FileManager.default.contentsOfDirectory(atPath: FileManager.default.temporaryDirectory.path)
            .filter { $0.hasPrefix("moekit-cli-split-\(getpid())-bad") || $0.hasPrefix("moekit-cli-split-\(getpid()).bin") }
        XCTAssertEqual(left, [], "a refused split writes nothing")
    }

    /// `moe analyze` writes its files, and its profile prunes: perplexity with the least-used
    /// expert of every layer skipped reads the rest only.
    func testAnalyzeWritesTheReportAndItsProfilePrunes() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-analyze-\(UUID().uuidString)").path
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        let run = try moe(["analyze", "--synthetic", "--samples", "60", "--out", dir])
        XCTAssertEqual(run.status, 0, run.err)
        for name in ["analysis.json", "profile.json", "report.html", "load.svg", "experts-per-token.svg", "consistency.svg",
                     "coactivation-layer0.svg", "groups-layer2.svg"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/" + name), name)
        }
        let html = try String(contentsOfFile: dir + "/report.html", encoding: .utf8)
        XCTAssertEqual(html.components(separatedBy: "<svg").count - 1, 10)
        let analysis = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/analysis.json"))) as? [String: Any])
        let layers = try XCTUnwrap(analysis["layers"] as? [[String: Any]])
        XCTAssertEqual(layers.count, 3)
        XCTAssertEqual(layers[0]["experts_per_token"] as? Double, 2)
        let pruned = try moe(["perplexity", "--synthetic", "--samples", "12", "--context", "64", "--prune-profile", dir + "/profile.json",
                              "--keep", "3", "--per-layer"])
        XCTAssertEqual(pruned.status, 0, pruned.err)
        let report = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(pruned.out.utf8)) as? [String: Any])
        XCTAssertNotNil(report["mean_accuracy"] as? Double)
    }

    /// `moe perplexity --kl-base`: a run against its own saved distributions is KL ~ 0 with full
    /// agreement (up to the f16 rounding); top-1 routing moves them.
    func testPerplexityKLAgainstASavedBase() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-kl-\(UUID().uuidString).lp").path
        addTeardownBlock { try? FileManager.default.removeItem(atPath: base) }
        let args = ["perplexity", "--synthetic", "--samples", "24", "--context", "64"]
        XCTAssertEqual(try moe(args + ["--save-logits", base]).status, 0)
        func kl(_ extra: [String]) throws -> (kl: Double, top1: Double) {
            let r = try moe(args + ["--kl-base", base] + extra)
            XCTAssertEqual(r.status, 0, r.err)
            let p = try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])?["perplexity"] as? [String: Any])
            return (try XCTUnwrap(p["kl_divergence"] as? Double), try XCTUnwrap(p["top1_agreement"] as? Double))
        }
        let same = try kl([])
        XCTAssertLessThan(same.kl, 1e-3)
        XCTAssertGreaterThan(same.top1, 0.99)
        let top1 = try kl(["--experts-per-token", "1"])
        XCTAssertGreaterThan(top1.kl, 0.01)
        XCTAssertLessThan(top1.top1, same.top1)
    }
}
