import AsyncHTTPClient
import Foundation
import MoECore
import MoEGenerate
import MoEModels
import MoEServer
import NIOCore
import XCTest

/// `moe serve`'s server end to end on a loopback port with the embedded default model, with
/// async-http-client as the client: both endpoints streamed and not, greedy answers equal to
/// `Generator`'s, stop strings, the MoE extension, auth, cancellation, 429, and every error path.
final class ServerTests: XCTestCase {
    static let modelPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Sources/moe/DefaultModel").path

    /// A running server and a client for it.
    struct Running: Sendable {
        let server: MoEServer
        let task: Task<Void, any Error>
        let port: Int
        let client: HTTPClient

        func stop() async throws {
            try await client.shutdown()
            task.cancel()
            server.shutdown()
        }
    }

    final class PortBox: @unchecked Sendable {
        let lock = NSCondition()
        var port: Int?
        func set(_ p: Int) { lock.lock(); port = p; lock.broadcast(); lock.unlock() }
        func wait() -> Int? {
            lock.lock()
            defer { lock.unlock() }
            let deadline = Date().addingTimeInterval(30)
            while port == nil, lock.wait(until: deadline) {}
            return port
        }
    }

    /// Runs `body` against a fresh server, stopping it (and its client) however `body` ends.
    func withServer(_ configure: (inout ServerConfiguration) -> Void = { _ in },
                    prepare: (DecoderModel) throws -> Void = { _ in },
                    _ body: (Running) async throws -> Void) async throws {
        let r = try await start(configure, prepare: prepare)
        do {
            try await body(r)
        } catch {
            try await r.stop()
            throw error
        }
        try await r.stop()
    }

    func start(_ configure: (inout ServerConfiguration) -> Void = { _ in },
               prepare: (DecoderModel) throws -> Void = { _ in }) async throws -> Running {
        let model = try DecoderModel(path: Self.modelPath, pool: ThreadPool(threads: 2))
        try prepare(model)
        let tokenizer = try Tokenizer.of(model: Self.modelPath)
        var config = ServerConfiguration()
        config.port = 0
        config.modelName = "default"
        config.contextLength = 256
        config.maxTokens = 200
        configure(&config)
        let server = MoEServer(model: model, tokenizer: tokenizer, chat: nil, configuration: config)
        let box = PortBox()
        let task = Task { try await server.run { port in box.set(port) } }
        let found = await Task.detached { box.wait() }.value
        let port = try XCTUnwrap(found, "the server did not start")
        return Running(server: server, task: task, port: port, client: HTTPClient(eventLoopGroupProvider: .singleton))
    }

    /// Sends a request; returns the status and the body.
    func send(_ r: Running, _ path: String, _ body: String? = nil, headers: [(String, String)] = []) async throws -> (Int, String) {
        try await Self.send(r, path, body, headers: headers)
    }

    static func send(_ r: Running, _ path: String, _ body: String? = nil, headers: [(String, String)] = []) async throws -> (Int, String) {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(r.port)\(path)")
        if let body {
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        for (k, v) in headers { request.headers.add(name: k, value: v) }
        let response = try await r.client.execute(request, timeout: .seconds(120))
        let data = try await response.body.collect(upTo: 1 << 24)
        return (Int(response.status.code), String(buffer: data))
    }

    func json(_ s: String) throws -> [String: Any] { try Self.json(s) }

    static func json(_ s: String) throws -> [String: Any] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(s.utf8)) as? [String: Any], s)
    }

    /// The `data:` payloads of an event stream.
    func events(_ body: String) -> [String] {
        body.components(separatedBy: "\n\n").compactMap { $0.hasPrefix("data: ") ? String($0.dropFirst(6)) : nil }
    }

    func testEndpointsAnswerAsOpenAIAndMatchTheGenerator() async throws {
        try await withServer { r in
            let (healthStatus, health) = try await send(r, "/health")
            XCTAssertEqual(healthStatus, 200)
            XCTAssertEqual(try json(health)["status"] as? String, "ok")
            let (_, models) = try await send(r, "/v1/models")
            XCTAssertEqual(((try json(models)["data"] as? [[String: Any]])?.first?["id"]) as? String, "default")

            // Greedy: the same text the generator gives for the same prompt.
            let tokenizer = try Tokenizer.of(model: Self.modelPath)
            let generator = Generator(model: try DecoderModel(path: Self.modelPath), tokenizer: tokenizer)
            let expected = try generator.generate(prompt: "add 12 35 =", options: GenerationOptions(maxTokens: 10)).text
            let (status, body) = try await send(r, "/v1/chat/completions", #"{"model": "default", "messages": [{"role": "user", "content": "add 12 35 ="}], "max_tokens": 10, "temperature": 0}"#)
            XCTAssertEqual(status, 200, body)
            let chat = try json(body)
            XCTAssertEqual(chat["object"] as? String, "chat.completion")
            let choice = try XCTUnwrap((chat["choices"] as? [[String: Any]])?.first)
            XCTAssertEqual((choice["message"] as? [String: Any])?["content"] as? String, expected)
            let usage = try XCTUnwrap(chat["usage"] as? [String: Int])
            XCTAssertEqual(usage["prompt_tokens"], tokenizer.encode("add 12 35 =").count)
            XCTAssertEqual(usage["total_tokens"], usage["prompt_tokens"]! + usage["completion_tokens"]!)

            // Streamed completions: the deltas add up to the whole answer; usage then [DONE] close it.
            let (_, whole) = try await send(r, "/v1/completions", #"{"model": "default", "prompt": "sort 5 3 9 1 =", "max_tokens": 12, "temperature": 0, "logprobs": 2}"#)
            let wholeChoice = try XCTUnwrap((try json(whole)["choices"] as? [[String: Any]])?.first)
            let (streamStatus, streamed) = try await send(r, "/v1/completions", #"{"model": "default", "prompt": "sort 5 3 9 1 =", "max_tokens": 12, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}}"#)
            XCTAssertEqual(streamStatus, 200)
            let payloads = events(streamed)
            XCTAssertEqual(payloads.last, "[DONE]")
            var text = "", finish: String? = nil
            for p in payloads.dropLast(2) {
                let c = try XCTUnwrap((try json(p)["choices"] as? [[String: Any]])?.first)
                text += c["text"] as? String ?? ""
                if let f = c["finish_reason"] as? String { finish = f }
            }
            XCTAssertEqual(text, wholeChoice["text"] as? String)
            XCTAssertEqual(finish, wholeChoice["finish_reason"] as? String)
            XCTAssertNotNil(try json(payloads[payloads.count - 2])["usage"])
            let logprobs = try XCTUnwrap(wholeChoice["logprobs"] as? [String: Any])
            XCTAssertEqual((logprobs["tokens"] as? [String])?.joined(), wholeChoice["text"] as? String)

            // A stop string cuts the answer before it.
            let cut = String(try XCTUnwrap(wholeChoice["text"] as? String).dropFirst(2).prefix(1))
            let (_, stopped) = try await send(r, "/v1/completions", #"{"model": "default", "prompt": "sort 5 3 9 1 =", "max_tokens": 12, "temperature": 0, "stop": [""# + cut + #""]}"#)
            let stoppedChoice = try XCTUnwrap((try json(stopped)["choices"] as? [[String: Any]])?.first)
            XCTAssertEqual(stoppedChoice["finish_reason"] as? String, "stop")
            XCTAssertFalse((stoppedChoice["text"] as? String ?? cut).contains(cut))

            // The MoE extension: one expert per token, and each token's experts per layer.
            let (moeStatus, moe) = try await send(r, "/v1/chat/completions", #"{"model": "default", "messages": [{"role": "user", "content": "add 1 2 ="}], "max_tokens": 4, "temperature": 0, "moe": {"experts_per_token": 1, "return_routing": true}}"#)
            XCTAssertEqual(moeStatus, 200, moe)
            let routing = try XCTUnwrap(((try json(moe)["choices"] as? [[String: Any]])?.first?["moe_routing"]) as? [[String: [Int]]])
            XCTAssertFalse(routing.isEmpty)
            XCTAssertTrue(routing.allSatisfy { $0.values.allSatisfy { $0.count == 1 } })

            // n choices with seeds: n answers.
            let (_, many) = try await send(r, "/v1/completions", #"{"model": "default", "prompt": "add 3 4 =", "max_tokens": 4, "n": 3, "seed": 5}"#)
            XCTAssertEqual((try json(many)["choices"] as? [[String: Any]])?.count, 3)

            let (_, metrics) = try await send(r, "/metrics")
            for name in ["moekit_requests_total", "moekit_prompt_tokens_total", "moekit_generation_tokens_total", "moekit_time_to_first_token_seconds",
                         "moekit_inter_token_latency_seconds", "moekit_queue_depth", "moekit_active_sequences", "moekit_kv_cache_bytes", "moekit_expert_tokens"] {
                XCTAssertTrue(metrics.contains(name), "metrics lack \(name)")
            }
        }
    }

    func testBadRequestsGetOpenAIErrors() async throws {
        try await withServer({ $0.maxBodyBytes = 4096 }) { r in
            let cases: [(String, String, Int, String?)] = [
                ("/v1/chat/completions", "{bad json", 400, nil),
                ("/v1/chat/completions", "[1, 2]", 400, nil),
                ("/v1/chat/completions", #"{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}"#, 400, "model"),
                ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": "hi"}]}"#, 400, "model"),
                ("/v1/chat/completions", #"{"model": "default", "messages": []}"#, 400, "messages"),
                ("/v1/chat/completions", #"{"model": "default", "messages": [{"role": "wizard", "content": "hi"}]}"#, 400, "messages.[0].role"),
                ("/v1/chat/completions", #"{"model": "default", "messages": [{"role": "user", "content": 5}]}"#, 400, "messages.[0].content"),
                ("/v1/chat/completions", #"{"model": "default", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}"#, 400, "temperature"),
                ("/v1/chat/completions", #"{"model": "default", "messages": [{"role": "user", "content": "hi"}], "temperature": 3}"#, 400, "temperature"),
                ("/v1/chat/completions", #"{"model": "default", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}"#, 400, "max_tokens"),
                ("/v1/chat/completions", #"{"model": "default", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}"#, 400, "max_tokens"),
                ("/v1/chat/completions", #"{"model": "default", "messages": [{"role": "user", "content": "hi"}], "n": 99}"#, 400, "n"),
                ("/v1/chat/completions", #"{"model": "default", "messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b", "c", "d", "e"]}"#, 400, "stop"),
                ("/v1/chat/completions", #"{"model": "default", "messages": [{"role": "user", "content": "hi"}], "stream_options": {"include_usage": true}}"#, 400, "stream_options"),
                ("/v1/chat/completions", #"{"model": "default", "messages": [{"role": "user", "content": "hi"}], "top_logprobs": 3}"#, 400, "top_logprobs"),
                ("/v1/chat/completions", #"{"model": "default", "messages": [{"role": "user", "content": "hi"}], "moe": {"experts_per_token": 99}}"#, 400, "moe"),
                ("/v1/chat/completions", #"{"model": "default", "messages": [{"role": "user", "content": "hi"}], "moe": {"expert_top_p": 0}}"#, 400, "moe.expert_top_p"),
                ("/v1/chat/completions", #"{"model": "default", "messages": [{"role": "user", "content": "hi"}], "moe": {"colour": 1}}"#, 400, "moe.colour"),
                ("/v1/chat/completions", #"{"model": "default", "messages": [{"role": "user", "content": "hi"}], "presence_penalty": 1}"#, 400, "presence_penalty"),
                ("/v1/completions", #"{"model": "default", "prompt": ""# + String(repeating: "a ", count: 300) + #""}"#, 400, "prompt"),
                ("/v1/completions", #"{"model": "default", "prompt": [1, 2, 999999]}"#, 400, "prompt"),
            ("/v1/completions", #"{"model": "default", "prompt": [1, 2, 259]}"#, 400, "prompt"),
            ("/v1/completions", #"{"model": "default", "prompt": [[1, 2], [-1]]}"#, 400, "prompt"),
                ("/v1/completions", #"{"model": "default", "prompt": 5}"#, 400, "prompt"),
                ("/v1/completions", #"{"model": "default", "prompt": "x", "echo": true}"#, 400, "echo"),
                ("/v1/completions", #"{"model": "default", "prompt": ""# + String(repeating: "x", count: 5000) + #""}"#, 413, nil),
            ]
            for (path, body, status, param) in cases {
                let (got, text) = try await send(r, path, body)
                XCTAssertEqual(got, status, "\(body.prefix(120)): \(text)")
                let error = try XCTUnwrap(try json(text)["error"] as? [String: Any], text)
                XCTAssertNotNil(error["message"] as? String)
                XCTAssertNotNil(error["type"] as? String)
                if let param { XCTAssertEqual(error["param"] as? String, param, "\(body.prefix(120))") }
            }
            // The server is still up.
            let (status, _) = try await send(r, "/health")
            XCTAssertEqual(status, 200)
        }
    }

    func testAPIKeyIsRequired() async throws {
        try await withServer({ $0.apiKey = "sekret" }) { r in
            let body = #"{"model": "default", "prompt": "add 1 2 =", "max_tokens": 2}"#
            let (none, noneBody) = try await send(r, "/v1/completions", body)
            XCTAssertEqual(none, 401)
            XCTAssertEqual((try json(noneBody)["error"] as? [String: Any])?["code"] as? String, "invalid_api_key")
            let (wrong, _) = try await send(r, "/v1/completions", body, headers: [("Authorization", "Bearer nope")])
            XCTAssertEqual(wrong, 401)
            let (right, _) = try await send(r, "/v1/completions", body, headers: [("Authorization", "Bearer sekret")])
            XCTAssertEqual(right, 200)
            let (models, _) = try await send(r, "/v1/models")
            XCTAssertEqual(models, 401)
            let (health, _) = try await send(r, "/health")
            XCTAssertEqual(health, 200)
        }
    }

    func testDisconnectCancelsAndFullQueueRefuses() async throws {
        try await withServer({ $0.parallel = 1; $0.queue = 0; $0.contextLength = 8192; $0.maxTokens = 8192 }) { r in
            // A long streamed request; its client leaves after the first chunk.
            let leaving = HTTPClient(eventLoopGroupProvider: .singleton)
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(r.port)/v1/completions")
            request.method = .POST
            request.body = .bytes(ByteBuffer(string: #"{"model": "default", "prompt": "copy a b c =", "max_tokens": 4000, "stream": true, "temperature": 1, "seed": 3, "ignore_eos": true}"#))
            let response = try await leaving.execute(request, timeout: .seconds(60))
            var iterator = response.body.makeAsyncIterator()
            _ = try await iterator.next()
            // While it runs, the one slot is taken and nothing may queue: 429.
            let (busy, busyBody) = try await send(r, "/v1/completions", #"{"model": "default", "prompt": "add 1 2 =", "max_tokens": 2}"#)
            XCTAssertEqual(busy, 429, busyBody)
            XCTAssertEqual((try json(busyBody)["error"] as? [String: Any])?["type"] as? String, "rate_limit_error")
            try await leaving.shutdown()
            // The engine drops the sequence within a few steps.
            var active = -1
            for _ in 0..<200 {
                let (_, metrics) = try await send(r, "/metrics")
                let line = metrics.split(separator: "\n").first { $0.hasPrefix("moekit_active_sequences ") }
                active = Int(Double(line?.split(separator: " ").last ?? "") ?? -1)
                if active == 0 { break }
                try await Task.sleep(nanoseconds: 20_000_000)
            }
            XCTAssertEqual(active, 0)
            let (_, metrics) = try await send(r, "/metrics")
            XCTAssertTrue(metrics.contains(#"moekit_finished_requests{reason="cancelled"} 1.0"#), metrics)
            let (after, _) = try await send(r, "/v1/completions", #"{"model": "default", "prompt": "add 1 2 =", "max_tokens": 2}"#)
            XCTAssertEqual(after, 200)
        }
    }

    func testConcurrentGreedyRequestsEachGetTheirOwnAnswer() async throws {
        try await withServer({ $0.parallel = 4 }) { r in
            let prompts = ["add 12 35 =", "reverse abcdef =", "sort 5 3 9 1 =", "copy hello world =", "add 7 8 =", "max 3 9 2 =",
                           "count a b c =", "add 100 1 ="]
            var single: [String] = []
            for p in prompts {
                let (_, body) = try await send(r, "/v1/completions", #"{"model": "default", "prompt": ""# + p + #"", "max_tokens": 10, "temperature": 0}"#)
                single.append(try XCTUnwrap((try json(body)["choices"] as? [[String: Any]])?.first?["text"] as? String))
            }
            let together = try await withThrowingTaskGroup(of: (Int, String).self) { group in
                for (i, p) in prompts.enumerated() {
                    group.addTask {
                        let (_, body) = try await Self.send(r, "/v1/completions", #"{"model": "default", "prompt": ""# + p + #"", "max_tokens": 10, "temperature": 0}"#)
                        return (i, try XCTUnwrap((try Self.json(body)["choices"] as? [[String: Any]])?.first?["text"] as? String))
                    }
                }
                var out = [String](repeating: "", count: prompts.count)
                for try await (i, text) in group { out[i] = text }
                return out
            }
            XCTAssertEqual(together, single)
        }
    }

    /// Under a memory budget of two experts beyond the resident weights, greedy answers are the
    /// resident model's, and /metrics reports the expert cache.
    func testAMemoryBudgetKeepsAnswersAndReportsTheCache() async throws {
        let prompts = ["add 12 35 =", "reverse abcdef =", "sort 5 3 9 1 ="]
        func answers(_ r: Running) async throws -> [String] {
            var out: [String] = []
            for p in prompts {
                let (_, body) = try await send(r, "/v1/completions", #"{"model": "default", "prompt": ""# + p + #"", "max_tokens": 10, "temperature": 0}"#)
                out.append(try XCTUnwrap((try json(body)["choices"] as? [[String: Any]])?.first?["text"] as? String))
            }
            return out
        }
        var plain: [String] = []
        try await withServer { r in plain = try await answers(r) }
        try await withServer(prepare: { m in
            try m.useExpertCache(budget: try m.storedBytes() - m.routedExpertBytes + 2 * m.largestExpertBytes)
        }) { r in
            let cached = try await answers(r)
            XCTAssertEqual(cached, plain)
            let (_, metrics) = try await send(r, "/metrics")
            let misses = metrics.split(separator: "\n").first { $0.hasPrefix("moekit_expert_cache_misses ") }
            XCTAssertGreaterThan(Double(misses?.split(separator: " ").last ?? "") ?? 0, 0, metrics)
            for name in ["moekit_expert_cache_hits ", "moekit_expert_cache_read_bytes ", "moekit_expert_cache_capacity_bytes "] {
                XCTAssertTrue(metrics.contains(name), "metrics lack \(name)")
            }
        }
    }
}
