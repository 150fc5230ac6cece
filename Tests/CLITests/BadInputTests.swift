import Foundation
import MoEModels
import XCTest

/// Issue 17's classes of bad input walked over every command: each case runs `moe` in an empty
/// working folder and checks the exit status (1 for bad input, 64 for a malformed command
/// line), that standard output is empty, that the message is one `Error:` line naming the
/// file, field or option at fault, and that nothing was written.
final class BadInputTests: XCTestCase {
    struct Case {
        let args: [String]
        let status: Int32
        let mentions: [String]
    }

    var work: URL!
    let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")

    override func setUpWithError() throws {
        work = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-bad-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: work) }

    func moe(_ arguments: [String], in folder: URL) throws -> (status: Int32, out: String, err: String) {
        try runMoe(arguments, in: folder)
    }

    /// A copy of a fixture folder under `name` with `edit` applied to its config.json.
    func folder(_ name: String, from fixture: String, config edit: (inout [String: Any]) -> Void = { _ in }) throws -> String {
        let dst = work.appendingPathComponent(name)
        try FileManager.default.copyItem(at: fixtures.appendingPathComponent(fixture), to: dst)
        let configURL = dst.appendingPathComponent("config.json")
        var config = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as? [String: Any])
        edit(&config)
        try JSONSerialization.data(withJSONObject: config).write(to: configURL)
        return dst.path
    }

    func file(_ name: String, _ text: String) throws -> String {
        let url = work.appendingPathComponent(name)
        try Data(text.utf8).write(to: url)
        return url.path
    }

    /// `model.safetensors` of `dir` with the first f32 value of `tensor` set to NaN.
    func poison(_ dir: String, tensor: String) throws {
        let url = URL(fileURLWithPath: dir).appendingPathComponent("model.safetensors")
        var bytes = [UInt8](try Data(contentsOf: url))
        let headerLength = bytes[0..<8].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        let header = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(bytes[8..<(8 + headerLength)])) as? [String: Any])
        let entry = try XCTUnwrap(header[tensor] as? [String: Any])
        XCTAssertEqual(entry["dtype"] as? String, "F32")
        let start = 8 + headerLength + (try XCTUnwrap((entry["data_offsets"] as? [Int])?.first))
        withUnsafeBytes(of: Float.nan.bitPattern.littleEndian) { for (i, b) in $0.enumerated() { bytes[start + i] = b } }
        try Data(bytes).write(to: url)
    }

    func testEveryCommandRejectsBadInputCleanly() throws {
        let gguf = fixtures.appendingPathComponent("gguf_models/qwen3_moe.q8_0.gguf").path
        let mixtral = fixtures.appendingPathComponent("mixtral").path
        let qwen2 = fixtures.appendingPathComponent("qwen2_moe").path
        let llamaAdapter = fixtures.appendingPathComponent("lora/llama").path
        let deepseekFolder = fixtures.appendingPathComponent("deepseek_v3").path
        let huge = try folder("huge", from: "mixtral") { $0["num_hidden_layers"] = 1e12 }
        let typed = try folder("typed", from: "mixtral") { $0["num_hidden_layers"] = "two" }
        let rotary = try folder("rotary", from: "glm4_moe") {  // once a trap converting hd * 3e88 to Int (found by the config fuzzer)
            $0["rope_parameters"] = ["partial_rotary_factor": 3.3e88, "rope_theta": 10000.0, "rope_type": "default"]
        }
        let deep = try folder("deep", from: "deepseek_v3") { $0["kv_lora_rank"] = 1 << 62 }
        let nan = try folder("nan", from: "mixtral")
        try poison(nan, tensor: "model.layers.0.self_attn.q_proj.weight")
        let truncated = work.appendingPathComponent("trunc.gguf").path
        try Data(try Data(contentsOf: URL(fileURLWithPath: gguf)).prefix(5000)).write(to: URL(fileURLWithPath: truncated))
        let badPattern = try folder("pattern", from: "mixtral")
        try Data(#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(a)\\1"}}}"#.utf8)
            .write(to: URL(fileURLWithPath: badPattern).appendingPathComponent("tokenizer.json"))
        let badMerges = try folder("merges", from: "mixtral")
        try Data(#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": "a b"}}"#.utf8)
            .write(to: URL(fileURLWithPath: badMerges).appendingPathComponent("tokenizer.json"))
        let ragged = try file("ragged.json", "[[1, 2], [3]]")
        let logits = try file("logits.json", "[[1, 2, 0, -1]]")
        let routerTypo = try file("router.json", #"{"name": "topk-softmax", "capacity_factr": 1.25}"#)
        let trainTypo = try file("typo.json", #"{"steps": 2, "learning_rate": 0.1, "checkpoint_dir": "run-typo"}"#)
        let trainType = try file("type.json", #"{"steps": "2", "checkpoint_dir": "run-type"}"#)
        let trainEPZero = try file("ep0.json", #"{"steps": 2, "expert_parallel": 0, "checkpoint_dir": "run-ep0"}"#)
        let trainEPNoDP = try file("epdp.json", #"{"steps": 2, "expert_parallel": 2, "checkpoint_dir": "run-epdp"}"#)
        let trainEPAlone = try file("epalone.json", #"{"steps": 2, "expert_parallel": 2, "data_parallel": true, "checkpoint_dir": "run-epalone"}"#)
        let trainChunksNoEP = try file("chunks.json", #"{"steps": 2, "overlap_chunks": 4, "checkpoint_dir": "run-chunks"}"#)
        let trainChunksZero = try file("chunks0.json", #"{"steps": 2, "overlap_chunks": 0, "expert_parallel": 2, "data_parallel": true, "checkpoint_dir": "run-chunks0"}"#)
        let trainToml = try file("bad.toml", "steps = 2\ncheckpoint_dir = \"run-toml\"\n[model\n")
        let trainNoData = try file("nodata.json", #"{"steps": 2, "data": {"text_files": []}, "checkpoint_dir": "run-nodata"}"#)
        let trainHeld = try file("held.json", #"{"steps": 2, "data": {"synthetic": {"held_out": 2}}, "checkpoint_dir": "run-held"}"#)
        let trainDir = try file("dir.json", #"{"steps": 2, "checkpoint_dir": "/proc/moekit-nope"}"#)
        let trainOK = try file("ok.json", #"{"steps": 2, "checkpoint_dir": "run-resume"}"#)
        let loraNoFrom = try file("lora-nofrom.json", #"{"lora": {"rank": 4}, "steps": 2, "checkpoint_dir": "run-lora"}"#)
        let loraRank = try file("lora-rank.json", #"{"lora": {"rank": 0}, "steps": 2, "checkpoint_dir": "run-lora"}"#)
        let loraTypo = try file("lora-typo.json", #"{"lora": {"rnk": 4}, "steps": 2, "checkpoint_dir": "run-lora"}"#)
        let loraNone = try file("lora-none.json", #"{"lora": {"target_modules": ["nothing_proj"]}, "steps": 2, "checkpoint_dir": "run-lora"}"#)
        _ = try file("bad.jsonl", "not json\n")
        let sftBad = try file("sft-bad.json", #"{"data": {"jsonl": ["bad.jsonl"]}, "steps": 2, "checkpoint_dir": "run-sft"}"#)
        let sftMissing = try file("sft-missing.json", #"{"data": {"jsonl": ["nope.jsonl"]}, "steps": 2, "checkpoint_dir": "run-sft"}"#)
        let sftTemplate = try file("sft-template.json", #"{"data": {"synthetic": {}, "chat_template": "t.jinja"}, "steps": 2, "checkpoint_dir": "run-sft"}"#)
        let loraDType = try file("lora-dtype.json", #"{"lora": {"base_dtype": "q4"}, "steps": 2, "checkpoint_dir": "run-lora"}"#)
        let loraExperts = try file("lora-experts.json", #"{"lora": {"kind": "mixlora", "experts": 1000}, "steps": 2, "checkpoint_dir": "run-lora"}"#)
        let loraTargets = try file("lora-targets.json", #"{"lora": {"kind": "mole", "expert_target_modules": ["w1"]}, "steps": 2, "checkpoint_dir": "run-lora"}"#)
        let loraKind = try file("lora-kind.json", #"{"lora": {"kind": "moe-lora"}, "steps": 2, "checkpoint_dir": "run-lora"}"#)
        let moleTopK = try file("mole-topk.json", #"{"lora": {"kind": "mole", "top_k": 2}, "steps": 2, "checkpoint_dir": "run-lora"}"#)
        let mixNoDense = try file("mix-nodense.json", #"{"lora": {"kind": "mixlora"}, "steps": 2, "checkpoint_dir": "run-lora"}"#)
        let mixDP = try file("mix-dp.json", #"{"lora": {"kind": "mixlora"}, "data_parallel": true, "steps": 2, "checkpoint_dir": "run-lora"}"#)
        let stackedName = try file("stacked-name.json", #"{"lora": {"target_parameters": ["mlp.experts.w1"]}, "steps": 2, "checkpoint_dir": "run-lora"}"#)
        let stackedDrop = try file("stacked-drop.json",
                                   #"{"lora": {"dropout": 0.1, "target_parameters": ["gate_up_proj"]}, "steps": 2, "checkpoint_dir": "run-lora"}"#)
        let stackedTwice = try file("stacked-twice.json",
                                    #"{"lora": {"target_modules": ["w1"], "target_parameters": ["gate_up_proj"]}, "steps": 2, "checkpoint_dir": "run-lora"}"#)
        let stackedDense = try file("stacked-dense.json",
                                    #"{"lora": {"target_modules": ["q_proj"], "target_parameters": ["down_proj"]}, "steps": 2, "checkpoint_dir": "run-lora"}"#)
        let stackedAdapter = work.appendingPathComponent("stacked-adapter")
        try FileManager.default.copyItem(at: fixtures.appendingPathComponent("lora/mixtral_experts"), to: stackedAdapter)
        let stackedConfig = stackedAdapter.appendingPathComponent("adapter_config.json")
        var adapterJSON = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: stackedConfig)) as? [String: Any])
        adapterJSON["target_parameters"] = ["mlp.experts.gate_up_proj"]  // two nested wrappers saved, one named
        try JSONSerialization.data(withJSONObject: adapterJSON).write(to: stackedConfig)
        let shortImatrix = work.appendingPathComponent("short.imatrix.gguf").path
        try ImportanceMatrix(entries: ["blk.0.attn_q.weight": .init(sums: [1, 2, 3], counts: [1])], datasets: ["t"], chunkCount: 1,
                             chunkSize: 512).write(to: shortImatrix)
        var dat = Data()  // a .dat imatrix: one entry of 1000 values, cut after 2
        for v: Int32 in [1, 4] { withUnsafeBytes(of: v.littleEndian) { dat.append(contentsOf: $0) } }
        dat.append(contentsOf: Array("blk.".utf8))
        for v: Int32 in [1, 1000, 0, 0] { withUnsafeBytes(of: v.littleEndian) { dat.append(contentsOf: $0) } }
        let truncatedDat = work.appendingPathComponent("trunc.dat").path
        let tiny = try file("tiny.txt", "too little text for a chunk")
        try dat.write(to: URL(fileURLWithPath: truncatedDat))
        let text = try file("text.txt", (0..<60).map { "\($0)+\($0 * 7 % 50)=\($0 + $0 * 7 % 50)" }.joined(separator: "\n"))
        let base = work.appendingPathComponent("base.lp").path
        let made = try moe(["perplexity", "--file", text, "--context", "32", "--save-logits", base], in: work)
        XCTAssertEqual(made.status, 0, made.err)
        let badProfile = try file("profile.json", #"{"tokens": 10, "load": {"0": [0.5, 0.5]}}"#)
        let tokBase = work.appendingPathComponent("tok-base").path  // a model with a tokenizer.json, for the skills scorer
        let initRandom = try moe(["init-random", "--arch", "llama", "--out", tokBase, "--vocab", "300", "--hidden", "32", "--layers", "1",
                                  "--heads", "2", "--kv-heads", "1", "--dense-size", "48"], in: work)
        XCTAssertEqual(initRandom.status, 0, initRandom.err)
        let inputs = Set(try FileManager.default.contentsOfDirectory(atPath: work.path))

        let cases: [Case] = [
            // Files: missing, malformed, out of range, wrong type, truncated, non-finite.
            Case(args: ["generate", "--model", "/nonexistent/model", "hi"], status: 1, mentions: ["/nonexistent/model"]),
            Case(args: ["generate", "--model", huge, "hi"], status: 1, mentions: ["config.json", "num_hidden_layers"]),
            Case(args: ["logits", "--model", typed, "--tokens", "1"], status: 1, mentions: ["config.json", "num_hidden_layers"]),
            Case(args: ["logits", "--model", deep, "--tokens", "1"], status: 1, mentions: ["config.json", "kv_lora_rank"]),
            Case(args: ["logits", "--model", rotary, "--tokens", "1"], status: 1, mentions: ["config.json", "partial_rotary_factor"]),
            Case(args: ["bench", "--model", huge], status: 1, mentions: ["num_hidden_layers"]),
            Case(args: ["generate", "--model", truncated, "hi"], status: 1, mentions: ["trunc.gguf"]),
            Case(args: ["logits", "--model", truncated, "--tokens", "1"], status: 1, mentions: ["trunc.gguf"]),
            Case(args: ["logits", "--model", nan, "--tokens", "1,2"], status: 1, mentions: ["nan", "layer 0", "NaN"]),
            Case(args: ["tokenize", "--model", badPattern, "--text", "aaa"], status: 1, mentions: ["tokenizer.json", "pre_tokenizer.pattern"]),
            Case(args: ["tokenize", "--model", badMerges, "--text", "aaa"], status: 1, mentions: ["tokenizer.json", "merges"]),
            Case(args: ["logits", "--model", mixtral, "--tokens", "99999999"], status: 1, mentions: ["99999999"]),
            Case(args: ["detokenize", "--model", gguf, "--ids", "1,99999999"], status: 1, mentions: ["99999999"]),
            Case(args: ["route", "--router", "topk-softmax", "--logits", "missing.json"], status: 1, mentions: ["missing.json", "No such file"]),
            Case(args: ["route", "--router", "topk-softmax", "--logits", ragged], status: 1, mentions: ["ragged.json", "token 1"]),
            Case(args: ["route", "--router", "bogus", "--logits", logits], status: 1, mentions: ["bogus"]),
            Case(args: ["route", "--config", routerTypo, "--logits", logits], status: 1, mentions: ["router.json", "capacity_factr", "unknown key"]),
            Case(args: ["init-random", "--arch", "mixtral", "--hidden", "1099511627776", "--out", "r-huge"], status: 1, mentions: ["hidden_size"]),
            Case(args: ["init-random", "--arch", "bogus", "--out", "r-bogus"], status: 1, mentions: ["bogus"]),
            Case(args: ["init-random", "--arch", "mixtral", "--init", "xavier", "--out", "r-init"], status: 64, mentions: ["--init", "xavier"]),
            Case(args: ["init-random", "--arch", "mixtral", "--init", "normal", "--init-std", "0", "--out", "r-std"], status: 64, mentions: ["--init-std"]),
            Case(args: ["init-random", "--arch", "mixtral", "--out", "/proc/moekit-nope"], status: 1, mentions: ["/proc/moekit-nope", "cannot create"]),
            Case(args: ["train", "--config", trainTypo], status: 1, mentions: ["typo.json", "learning_rate", "unknown key"]),
            Case(args: ["train", "--config", trainType], status: 1, mentions: ["type.json", "steps"]),
            Case(args: ["train", "--config", trainEPZero], status: 1, mentions: ["ep0.json", "expert_parallel", "1...4096"]),
            Case(args: ["train", "--config", trainEPNoDP], status: 1, mentions: ["epdp.json", "expert_parallel", "data_parallel"]),
            Case(args: ["train", "--config", trainChunksNoEP], status: 1, mentions: ["chunks.json", "overlap_chunks", "expert_parallel"]),
            Case(args: ["train", "--config", trainChunksZero], status: 1, mentions: ["chunks0.json", "overlap_chunks", "1...1024"]),
            Case(args: ["train", "--config", trainEPAlone], status: 1, mentions: ["epalone.json", "mpirun -np 2"]),
            Case(args: ["train", "--config", trainToml], status: 1, mentions: ["bad.toml", "line 3"]),
            Case(args: ["train", "--config", "missing.json"], status: 1, mentions: ["missing.json", "No such file"]),
            Case(args: ["train", "--config", trainNoData], status: 1, mentions: ["nodata.json", "data"]),
            Case(args: ["train", "--config", trainHeld], status: 1, mentions: ["held.json", "held_out"]),
            Case(args: ["train", "--config", trainDir], status: 1, mentions: ["checkpoint_dir", "/proc/moekit-nope"]),
            Case(args: ["train", "--config", trainOK, "--resume"], status: 1, mentions: ["run-resume", "no checkpoint"]),
            Case(args: ["train", "--config", trainOK, "--from", huge], status: 1, mentions: ["num_hidden_layers"]),
            Case(args: ["train", "--config", loraNoFrom], status: 1, mentions: ["lora-nofrom.json", "lora", "from"]),
            Case(args: ["train", "--config", loraRank, "--from", mixtral], status: 1, mentions: ["lora-rank.json", "lora.rank"]),
            Case(args: ["train", "--config", loraTypo, "--from", mixtral], status: 1, mentions: ["lora-typo.json", "rnk", "unknown key"]),
            Case(args: ["train", "--config", loraNone, "--from", mixtral], status: 1, mentions: ["lora.target_modules", "matches no projection"]),
            Case(args: ["upcycle", "--model", mixtral, "--experts", "4", "--top-k", "2", "--out", "up-a"], status: 1, mentions: ["not a dense model"]),
            Case(args: ["upcycle", "--model", "/nonexistent/dense", "--experts", "4", "--top-k", "2", "--out", "up-b"], status: 1, mentions: ["/nonexistent/dense"]),
            Case(args: ["upcycle", "--model", fixtures.appendingPathComponent("mistral").path, "--experts", "4", "--top-k", "9", "--out", "up-c"],
                 status: 1, mentions: ["--top-k"]),
            Case(args: ["skills", "select", "--library", "no-library", "--model", mixtral, "--shots", "bad.jsonl"], status: 1,
                 mentions: ["mixtral/tokenizer.json"]),
            Case(args: ["skills", "add", "--library", "lib", "--adapter", llamaAdapter, "--name", "x", "--model", qwen2], status: 1,
                 mentions: ["lora/llama"]),
            Case(args: ["skills", "select", "--library", "lib", "--model", mixtral, "--shots", "bad.jsonl", "--k", "0"], status: 64,
                 mentions: ["--k"]),
            Case(args: ["train", "--config", sftBad], status: 1, mentions: ["bad.jsonl", "line 1"]),
            Case(args: ["train", "--config", sftMissing], status: 1, mentions: ["nope.jsonl"]),
            Case(args: ["train", "--config", sftTemplate], status: 1, mentions: ["sft-template.json", "data.chat_template"]),
            Case(args: ["train", "--config", loraDType, "--from", mixtral], status: 1, mentions: ["lora-dtype.json", "lora.base_dtype"]),
            Case(args: ["train", "--config", loraExperts, "--from", mixtral], status: 1, mentions: ["lora-experts.json", "lora.experts"]),
            Case(args: ["train", "--config", loraTargets, "--from", mixtral], status: 1, mentions: ["lora-targets.json", "lora.expert_target_modules"]),
            Case(args: ["skills", "compose", "--library", "lib", "--model", mixtral, "--shots", "bad.jsonl", "--skills", "nope", "--out", "c"],
                 status: 1, mentions: ["nope", "no such skill"]),
            Case(args: ["skills", "mount", "--library", "lib", "--model", mixtral, "--shots", "bad.jsonl", "--skills", "a,b", "--out", "m",
                        "--steps", "0"], status: 64, mentions: ["--steps"]),
            Case(args: ["skills", "mount", "--library", "lib", "--model", mixtral, "--shots", "bad.jsonl", "--skills", "a,b", "--out", "m",
                        "--top-k", "0"], status: 64, mentions: ["--top-k"]),
            Case(args: ["skills", "mount", "--library", "lib", "--model", mixtral, "--shots", "bad.jsonl", "--skills", "a", "--out", "m"],
                 status: 64, mentions: ["at least two"]),
            Case(args: ["skills", "mount", "--library", "lib", "--model", mixtral, "--shots", "bad.jsonl", "--skills", "a,nope", "--out", "m"],
                 status: 1, mentions: ["no such skill"]),
            Case(args: ["skills", "mount", "--library", "lib", "--model", tokBase, "--shots", "bad.jsonl", "--skills", "a,b", "--out", "m",
                        "--eval", "missing-eval.jsonl"], status: 1, mentions: ["missing-eval.jsonl"]),
            Case(args: ["train", "--config", loraKind, "--from", mixtral], status: 1, mentions: ["lora-kind.json", "moe-lora", "mixlora"]),
            Case(args: ["train", "--config", moleTopK, "--from", mixtral], status: 1, mentions: ["mole-topk.json", "lora.top_k"]),
            Case(args: ["train", "--config", mixNoDense, "--from", mixtral], status: 1, mentions: ["lora.kind", "dense FFN"]),
            Case(args: ["train", "--config", mixDP, "--from", mixtral], status: 1, mentions: ["mix-dp.json", "data_parallel"]),
            Case(args: ["train", "--config", stackedName, "--from", mixtral], status: 1, mentions: ["stacked-name.json", "lora.target_parameters", "mlp.experts.w1"]),
            Case(args: ["train", "--config", stackedDrop, "--from", mixtral], status: 1, mentions: ["stacked-drop.json", "lora.dropout"]),
            Case(args: ["train", "--config", stackedTwice, "--from", mixtral], status: 1, mentions: ["lora.target_parameters", "one by one"]),
            Case(args: ["train", "--config", stackedDense, "--from", fixtures.appendingPathComponent("llama").path], status: 1,
                 mentions: ["lora.target_parameters", "match no stacked expert tensor"]),
            Case(args: ["logits", "--model", mixtral, "--tokens", "1", "--adapter", stackedAdapter.path], status: 1,
                 mentions: ["adapter_model.safetensors", "base_layer", "1 tensor"]),
            Case(args: ["logits", "--model", fixtures.appendingPathComponent("qwen3_moe").path, "--tokens", "1", "--adapter",
                        fixtures.appendingPathComponent("lora/mixtral_experts").path], status: 1, mentions: ["mixtral_experts", "experts"]),
            Case(args: ["quantize", "--model", truncated, "--type", "q8_0", "--out", "q.gguf"], status: 1, mentions: ["trunc.gguf"]),
            Case(args: ["quantize", "--model", gguf, "--type", "qmoe", "--calibration", text, "--out", "q"], status: 64, mentions: ["checkpoint folder"]),
            Case(args: ["quantize", "--model", mixtral, "--type", "qmoe", "--calibration", "missing.txt", "--out", "q"], status: 1, mentions: ["missing.txt"]),
            Case(args: ["quantize", "--model", mixtral, "--type", "qmoe", "--calibration", text, "--out", "q"], status: 1, mentions: ["tokenizer.json"]),
            Case(args: ["quantize", "--model", mixtral, "--type", "qmoe", "--calibration", text, "--out", mixtral], status: 1, mentions: ["already exists"]),
            Case(args: ["quantize", "--model", gguf, "--type", "q8_0", "--out", "/nonexistent/q.gguf"], status: 1, mentions: ["/nonexistent/q.gguf"]),
            // Importance matrices: too little text for one chunk, a file that is not an imatrix,
            // one whose entry does not fit the tensor, a missing calibration file.
            Case(args: ["imatrix", "--model", gguf, "--calibration", tiny, "--out", "m.gguf"], status: 1, mentions: ["tiny.txt", "chunk"]),
            Case(args: ["imatrix", "--model", gguf, "--calibration", "missing.txt", "--out", "m.gguf"], status: 1, mentions: ["missing.txt"]),
            Case(args: ["quantize", "--model", gguf, "--type", "q4_0", "--calibration", tiny, "--out", "q.gguf"], status: 1, mentions: ["tiny.txt", "chunk"]),
            Case(args: ["quantize", "--model", gguf, "--type", "q4_k_m", "--imatrix", text, "--out", "q.gguf"], status: 1, mentions: ["text.txt"]),
            Case(args: ["quantize", "--model", gguf, "--type", "q4_k_m", "--imatrix", shortImatrix, "--out", "q.gguf"], status: 1,
                 mentions: ["short.imatrix.gguf", "blk.0.attn_q.weight"]),
            Case(args: ["quantize", "--model", gguf, "--type", "q4_k_m", "--imatrix", truncatedDat, "--out", "q.gguf"], status: 1,
                 mentions: ["trunc.dat"]),
            Case(args: ["perplexity", "--file", "missing.txt"], status: 1, mentions: ["missing.txt"]),
            Case(args: ["perplexity", "--file", text, "--max-windows", "1", "--kl-base", base, "--save-logits", "new.lp"], status: 1,
                 mentions: ["base.lp", "tokens", "--max-windows"]),
            Case(args: ["perplexity", "--file", text, "--kl-base", text], status: 1, mentions: ["text.txt", "magic"]),
            Case(args: ["perplexity", "--model", gguf, "--file", text, "--experts-per-token", "9"], status: 1, mentions: ["--experts-per-token"]),
            Case(args: ["logits", "--model", deepseekFolder, "--tokens", "1", "--experts-per-token", "5"], status: 1, mentions: ["--experts-per-token", "groups"]),
            Case(args: ["generate", "--model", gguf, "--min-experts", "2", "hi"], status: 1, mentions: ["--min-experts"]),
            Case(args: ["analyze", "--file", "missing.txt", "--out", "analysis"], status: 1, mentions: ["missing.txt"]),
            Case(args: ["perplexity", "--file", text, "--prune-profile", badProfile, "--keep", "2"], status: 1, mentions: ["profile.json", "load"]),
            Case(args: ["generate", "--skip-experts", "0:9", "hi"], status: 1, mentions: ["--skip-experts"]),
            Case(args: ["prune", "--profile", badProfile, "--keep", "2", "--out", "p1"], status: 1, mentions: ["profile.json"]),
            Case(args: ["prune", "--model", gguf, "--profile", badProfile, "--keep", "2", "--out", "p2.gguf"], status: 1, mentions: ["profile.json"]),
            Case(args: ["prune", "--profile", "missing.json", "--keep", "2", "--out", "p3"], status: 1, mentions: ["missing.json"]),
            // Command lines: out of range, malformed, unknown.
            Case(args: ["prune", "--profile", badProfile, "--keep", "0", "--out", "p4"], status: 64, mentions: ["--keep"]),
            Case(args: ["prune", "--profile", badProfile, "--out", "p5"], status: 64, mentions: ["--keep"]),
            Case(args: ["analyze", "--out", "analysis"], status: 64, mentions: ["--file"]),
            Case(args: ["generate", "--skip-experts", "x", "hi"], status: 64, mentions: ["--skip-experts"]),
            Case(args: ["generate", "--keep", "2", "hi"], status: 64, mentions: ["--prune-profile"]),
            Case(args: ["generate", "--prune-profile", badProfile, "--keep", "0", "hi"], status: 64, mentions: ["--keep"]),
            Case(args: ["perplexity", "--file", text, "--context", "1"], status: 64, mentions: ["--context"]),
            Case(args: ["perplexity", "--file", text, "--context", "8", "--stride", "9"], status: 64, mentions: ["--stride"]),
            Case(args: ["generate", "--model", gguf, "--experts-per-token", "0", "hi"], status: 64, mentions: ["--experts-per-token"]),
            Case(args: ["bench", "--model", gguf, "--expert-top-p", "1.5"], status: 64, mentions: ["--expert-top-p"]),
            Case(args: ["logits", "--model", gguf, "--tokens", "1", "--expert-threshold", "1"], status: 64, mentions: ["--expert-threshold"]),
            Case(args: ["logits", "--model", gguf, "--tokens", "1", "--moe-layers", "3-1"], status: 64, mentions: ["--moe-layers"]),
            Case(args: ["generate", "--model", gguf, "--max-tokens", "1000000000000", "hi"], status: 64, mentions: ["--max-tokens"]),
            Case(args: ["generate", "--model", gguf, "--top-p", "1.5", "hi"], status: 64, mentions: ["--top-p"]),
            Case(args: ["generate", "--model", gguf, "--min-p", "1", "hi"], status: 64, mentions: ["--min-p"]),
            Case(args: ["generate", "--model", gguf, "--temperature", "nan", "hi"], status: 64, mentions: ["--temperature"]),
            Case(args: ["generate", "--model", gguf, "--stop", "", "hi"], status: 64, mentions: ["--stop"]),
            Case(args: ["generate", "--model", gguf, "--threads", "1000", "hi"], status: 64, mentions: ["--threads"]),
            Case(args: ["generate", "--model", gguf, "--bogus", "hi"], status: 64, mentions: ["--bogus"]),
            Case(args: ["logits", "--model", gguf, "--tokens", ""], status: 64, mentions: ["--tokens"]),
            Case(args: ["logits", "--model", gguf, "--tokens", "1,x"], status: 64, mentions: ["--tokens"]),
            Case(args: ["detokenize", "--model", gguf, "--ids", "x"], status: 64, mentions: ["--ids"]),
            Case(args: ["bench", "--model", gguf, "--gen-tokens", "9223372036854775807"], status: 64, mentions: ["--gen-tokens"]),
            Case(args: ["bench", "--model", gguf, "--prompt-tokens", "0"], status: 64, mentions: ["--prompt-tokens"]),
            Case(args: ["bench-kernels", "--threads", "0"], status: 64, mentions: ["--threads"]),
            Case(args: ["bench-kernels", "--only", "bogus"], status: 64, mentions: ["bogus"]),
            Case(args: ["route", "--router", "topk-softmax", "--logits", logits, "--capacity-factor", "inf"], status: 64, mentions: ["--capacity-factor"]),
            Case(args: ["route", "--router", "top-p", "--logits", logits, "--p", "0"], status: 64, mentions: ["--p"]),
            Case(args: ["route", "--router", "topk-sigmoid", "--logits", logits, "--routed-scaling", "-1"], status: 64, mentions: ["--routed-scaling"]),
            Case(args: ["quantize", "--model", gguf, "--type", "bogus", "--out", "q.gguf"], status: 64, mentions: ["--type", "bogus"]),
            Case(args: ["quantize", "--model", mixtral, "--type", "qmoe", "--out", "q"], status: 64, mentions: ["--calibration"]),
            Case(args: ["quantize", "--model", gguf, "--type", "q4_0", "--calibration", text, "--imatrix", "m.gguf", "--out", "q.gguf"], status: 64,
                 mentions: ["--calibration", "--imatrix"]),
            Case(args: ["quantize", "--model", gguf, "--type", "q4_0", "--calibration", text, "--chunk-size", "8", "--out", "q.gguf"], status: 64,
                 mentions: ["--chunk-size"]),
            Case(args: ["imatrix", "--model", gguf, "--calibration", text, "--out", "m.gguf", "--chunks", "0"], status: 64, mentions: ["--chunks"]),
            Case(args: ["imatrix", "--model", gguf, "--calibration", text, "--out", "m.gguf", "--chunk-size", "100000"], status: 64, mentions: ["--chunk-size"]),
            Case(args: ["quantize", "--model", mixtral, "--type", "qmoe", "--calibration", text, "--grid", "bogus", "--out", "q"], status: 64, mentions: ["--grid", "bogus"]),
            Case(args: ["quantize", "--model", mixtral, "--type", "qmoe", "--calibration", text, "--damp", "nan", "--out", "q"], status: 64, mentions: ["--damp"]),
            Case(args: ["quantize", "--model", mixtral, "--type", "qmoe", "--calibration", text, "--dead-zone", "1", "--out", "q"], status: 64, mentions: ["--dead-zone"]),
            Case(args: ["quantize", "--model", mixtral, "--type", "qmoe", "--calibration", text, "--dead-zone", "nan", "--out", "q"], status: 64, mentions: ["--dead-zone"]),
            Case(args: ["quantize", "--model", mixtral, "--type", "qmoe", "--calibration", text, "--min-tokens", "-1", "--out", "q"], status: 64,
                 mentions: ["--min-tokens"]),
            Case(args: ["quantize", "--model", mixtral, "--type", "qmoe", "--calibration", text, "--calibration-tokens", "0", "--out", "q"], status: 64,
                 mentions: ["--calibration-tokens"]),
            Case(args: ["quantize", "--model", mixtral, "--type", "qmoe", "--calibration", text, "--tensor-type", "a=q8_0", "--out", "q"], status: 64,
                 mentions: ["--tensor-type"]),
            Case(args: ["quantize", "--model", gguf, "--type", "q8_0", "--tensor-type", "([", "--out", "q.gguf"], status: 64, mentions: ["--tensor-type"]),
            Case(args: ["quantize", "--model", gguf, "--type", "q8_0", "--out", "q.gguf", "--threads", "100000"], status: 64, mentions: ["--threads"]),
            Case(args: ["bench", "--model", gguf, "--batch", "0"], status: 64, mentions: ["--batch"]),
            Case(args: ["bench", "--model", gguf, "--batch", "257"], status: 64, mentions: ["--batch"]),
            Case(args: ["generate", "--model", gguf, "--chat", "--template-kwargs", "{not json", "hi"], status: 64, mentions: ["--template-kwargs"]),
            Case(args: ["generate", "--model", gguf, "--chat", "--template-kwargs", "[1]", "hi"], status: 64, mentions: ["--template-kwargs"]),
            Case(args: ["generate", "--model", gguf, "--template-kwargs", "{}", "hi"], status: 64, mentions: ["--chat"]),
            Case(args: ["serve", "--port", "65536"], status: 64, mentions: ["--port"]),
            Case(args: ["serve", "--port", "-1"], status: 64, mentions: ["--port"]),
            Case(args: ["serve", "--context", "1"], status: 64, mentions: ["--context"]),
            Case(args: ["serve", "--max-tokens", "0"], status: 64, mentions: ["--max-tokens"]),
            Case(args: ["serve", "--parallel", "0"], status: 64, mentions: ["--parallel"]),
            Case(args: ["serve", "--parallel", "257"], status: 64, mentions: ["--parallel"]),
            Case(args: ["serve", "--queue", "-1"], status: 64, mentions: ["--queue"]),
            Case(args: ["serve", "--step-tokens", "0"], status: 64, mentions: ["--step-tokens"]),
            Case(args: ["serve", "--prefill-chunk", "512"], status: 64, mentions: ["--prefill-chunk", "--step-tokens"]),
            Case(args: ["serve", "--max-body-bytes", "10"], status: 64, mentions: ["--max-body-bytes"]),
            Case(args: ["serve", "--threads", "0"], status: 64, mentions: ["--threads"]),
            Case(args: ["serve", "--api-key", "a", "--api-key-file", "k"], status: 64, mentions: ["--api-key"]),
            Case(args: ["serve", "--model", "/nonexistent/model"], status: 1, mentions: ["/nonexistent/model"]),
            Case(args: ["serve", "--api-key-file", "missing-key"], status: 1, mentions: ["missing-key"]),
            Case(args: ["serve", "--model", gguf, "--chat-template", "missing.jinja"], status: 1, mentions: ["missing.jinja"]),
            Case(args: ["logits", "--model", gguf, "--tokens", "1", "--memory-budget", "1KB"], status: 1, mentions: ["qwen3_moe.q8_0.gguf", "memory budget"]),
            Case(args: ["bench", "--model", gguf, "--memory-budget", "12XB"], status: 64, mentions: ["--memory-budget"]),
            Case(args: ["logits", "--tokens", "1", "--expert-parallel", "0"], status: 64, mentions: ["--expert-parallel"]),
            // `swift test` builds without the MPI trait: sharding is refused with how to get it.
            Case(args: ["generate", "--expert-parallel", "2", "hi"], status: 64, mentions: ["--expert-parallel", "--traits MPI"]),
            Case(args: ["logits", "--tokens", "1", "--expert-rows", "partitioned"], status: 64, mentions: ["--expert-parallel"]),
            Case(args: ["bench", "--expert-parallel", "2", "--expert-rows", "sideways"], status: 64, mentions: ["--expert-rows", "sideways"]),
            Case(args: ["bench", "--expert-parallel", "2", "--overlap-chunks", "4"], status: 64, mentions: ["--overlap-chunks", "partitioned"]),
            Case(args: ["bench", "--expert-parallel", "2", "--expert-rows", "partitioned", "--overlap-chunks", "0"], status: 64,
                 mentions: ["--overlap-chunks"]),
            Case(args: ["generate", "--model", gguf, "--memory-budget", "-5MB", "hi"], status: 64, mentions: ["--memory-budget"]),
            Case(args: ["perplexity", "--file", text, "--memory-budget", "99999999TB"], status: 64, mentions: ["--memory-budget"]),
            Case(args: ["serve", "--memory-budget", "1GB", "--cache-policy", "fifo"], status: 64, mentions: ["--cache-policy"]),
            Case(args: ["logits", "--model", gguf, "--tokens", "1", "--cache-policy", "lfu"], status: 64, mentions: ["--memory-budget"]),
            Case(args: ["logits", "--model", gguf, "--tokens", "1", "--prefetch"], status: 64, mentions: ["--memory-budget"]),
            Case(args: ["logits", "--model", gguf, "--tokens", "1", "--cache-aware-routing", "0.1"], status: 64, mentions: ["--memory-budget"]),
            Case(args: ["logits", "--model", gguf, "--tokens", "1", "--direct-io"], status: 64, mentions: ["--memory-budget"]),
            Case(args: ["logits", "--model", gguf, "--tokens", "1", "--pack-experts"], status: 64, mentions: ["--memory-budget"]),
            Case(args: ["bench", "--model", gguf, "--memory-budget", "1GB", "--cache-aware-routing", "11"], status: 64, mentions: ["--cache-aware-routing"]),
            Case(args: ["generate", "--model", gguf, "--kv-cache", "q8_0", "hi"], status: 64, mentions: ["--kv-cache", "q8_0"]),
            Case(args: ["bench", "--model", gguf, "--prefill-chunk", "-1"], status: 64, mentions: ["--prefill-chunk"]),
            Case(args: ["logits", "--model", gguf, "--tokens", "1", "--adapter", "no-such-adapter"], status: 64, mentions: ["--adapter", "no-such-adapter"]),
            Case(args: ["logits", "--model", qwen2, "--tokens", "1", "--adapter", llamaAdapter], status: 1, mentions: ["lora/llama", "model.layers"]),
            Case(args: ["generate", "--model", qwen2, "--adapter", work.path, "hi"], status: 1, mentions: ["adapter_config.json"]),
            Case(args: ["merge", "--model", qwen2, "--out", "merged"], status: 64, mentions: ["--adapter"]),
            Case(args: ["perplexity", "--file", text, "--token-by-token", "--llama-chunks"], status: 64, mentions: ["--token-by-token"]),
            Case(args: ["merge", "--model", gguf, "--adapter", llamaAdapter, "--out", "merged"], status: 1, mentions: ["qwen3_moe.q8_0.gguf"]),
            Case(args: ["merge", "--model", qwen2, "--adapter", llamaAdapter, "--out", "merged"], status: 1, mentions: ["lora/llama"]),
        ]
        for c in cases {
            let r = try moe(c.args, in: work)
            let what = c.args.joined(separator: " ")
            XCTAssertEqual(r.status, c.status, "\(what): \(r.err)")
            XCTAssertEqual(r.out, "", "\(what) printed to standard output")
            let lines = r.err.split(separator: "\n", omittingEmptySubsequences: true)
            XCTAssertTrue(lines.first?.hasPrefix("Error: ") ?? false, "\(what): \(r.err)")
            if c.status == 1 { XCTAssertEqual(lines.count, 1, "\(what): \(r.err)") }
            for m in c.mentions { XCTAssertTrue(lines.first?.contains(m) ?? false, "\(what): '\(m)' not in \(r.err)") }
            XCTAssertFalse(r.err.contains("Fatal error") || r.err.contains("could not be completed"), "\(what): \(r.err)")
            let now = Set(try FileManager.default.contentsOfDirectory(atPath: work.path))
            XCTAssertEqual(now.subtracting(inputs), [], "\(what) wrote into the working folder")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: "/nonexistent/q.gguf"))
    }

    /// `moe train` under mpirun (its environment says 2 ranks) trains data parallel: without
    /// `data_parallel`, or with a batch the ranks do not divide, it is refused with the field
    /// named; a build without the MPI trait (as `swift test` builds) says how to get one.
    func testTrainUnderMpirunNeedsDataParallel() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-mpi-train-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let cases: [(config: String, status: Int32, mentions: [String])] = [
            (#"{"steps": 2, "batch": 4, "checkpoint_dir": "run-a"}"#, 1, ["data_parallel", "2 ranks"]),
            (#"{"steps": 2, "batch": 5, "data_parallel": true, "threads": 1, "checkpoint_dir": "run-b"}"#, 1, ["batch", "5 sequences", "2 ranks"]),
            (#"{"steps": 2, "batch": 4, "data_parallel": true, "checkpoint_dir": "run-c"}"#, 64, ["--traits MPI"]),
        ]
        for (i, c) in cases.enumerated() {
            let path = dir.appendingPathComponent("c\(i).json")
            try Data(c.config.utf8).write(to: path)
            let r = try runMoe(["train", "--config", path.path], in: dir, environment: ["OMPI_COMM_WORLD_SIZE": "2"])
            XCTAssertEqual(r.status, c.status, "\(c.config): \(r.err)")
            for m in c.mentions { XCTAssertTrue(r.err.contains(m), "\(c.config): '\(m)' not in \(r.err)") }
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("run-\(["a", "b", "c"][i])").path),
                           "nothing written")
        }
    }
}
