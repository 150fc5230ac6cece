import Foundation
import Hummingbird
import Logging
import MoECore
import MoEGenerate
import MoEModels
import NIOCore

/// How `moe serve` runs.
public struct ServerConfiguration: Sendable {
    /// Address to bind: loopback unless told otherwise.
    public var host = "127.0.0.1"
    /// Port (0: any free one, reported to `onRunning`).
    public var port = 8080
    /// When set, every endpoint but `/health` needs `Authorization: Bearer <key>`.
    public var apiKey: String?
    /// The model id clients name (`/v1/models` lists it).
    public var modelName = "moekit"
    /// Longest prompt plus completion, in tokens.
    public var contextLength = 4096
    /// Most tokens one request may ask for.
    public var maxTokens = 4096
    /// Largest request body accepted.
    public var maxBodyBytes = 8 << 20
    /// Sequences generated at once; the rest queue.
    public var parallel = 8
    /// Requests that may wait; beyond that, 429.
    public var queue = 64
    /// Rows one batched pass may carry (decode tokens plus prompt chunks).
    public var stepTokens = 256
    /// Stop strings for requests that give none (the embedded model ends its answer at "\n").
    public var defaultStop: [String] = []

    public init() {}
}

/// An OpenAI-compatible HTTP server for one model (Hummingbird 2): `/v1/chat/completions`,
/// `/v1/completions` (streamed as server-sent events or not), `/v1/models`, `/health`, and
/// Prometheus `/metrics`, over a continuous-batching `BatchEngine`. Per request, the `moe`
/// object sets the routing (`experts_per_token`, `expert_top_p`, `min_experts`,
/// `max_experts`, `expert_threshold`, `renormalize`) and `return_routing` returns each token's
/// experts per layer.
///
/// ```swift
/// let server = MoEServer(model: model, tokenizer: tokenizer, chat: try ChatFormat.of(model: path),
///                        configuration: config)
/// try await server.run()
/// ```
public final class MoEServer: Sendable {
    public let configuration: ServerConfiguration
    let engine: BatchEngine
    let parser: RequestParser
    let metrics: ServerMetrics
    let tokenizer: Tokenizer
    let started = Int(Date().timeIntervalSince1970)

    public init(model: DecoderModel, tokenizer: Tokenizer, chat: ChatFormat?, configuration: ServerConfiguration) {
        self.configuration = configuration
        self.tokenizer = tokenizer
        metrics = ServerMetrics(expertCache: model.expertCache)
        engine = BatchEngine(model: model, tokenizer: tokenizer,
                             configuration: .init(maxSequences: configuration.parallel, maxQueue: configuration.queue,
                                                  stepTokens: configuration.stepTokens))
        parser = RequestParser(modelName: configuration.modelName, tokenizer: tokenizer, chat: chat,
                               contextLength: configuration.contextLength, maxTokensLimit: configuration.maxTokens,
                               defaultStop: configuration.defaultStop, vocabularySize: model.spec.vocabSize)
    }

    /// Serves until the task is cancelled; `onRunning` hears the bound port.
    public func run(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        try await application(onRunning: onRunning).runService()
    }

    /// Stops the engine (waiting requests fail).
    public func shutdown() { engine.shutdown() }

    /// The Hummingbird application.
    public func application(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
        let router = Router()
        router.add(middleware: AuthMiddleware(key: configuration.apiKey, maxBodyBytes: configuration.maxBodyBytes))
        router.get("/health") { _, _ in self.json(object(("status", .str("ok")))) }
        router.get("/metrics") { _, _ in
            self.metrics.request(endpoint: "/metrics", status: 200)
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                            body: .init(byteBuffer: ByteBuffer(string: self.metrics.render(engine: self.engine))))
        }
        router.get("/v1/models") { _, _ in
            self.metrics.request(endpoint: "/v1/models", status: 200)
            let model = object(("id", .str(self.configuration.modelName)), ("object", .str("model")), ("created", .int(self.started)),
                               ("owned_by", .str("moekit")))
            return self.json(object(("object", .str("list")), ("data", .list([model]))))
        }
        router.post("/v1/chat/completions") { request, _ in await self.generate(request, chat: true) }
        router.post("/v1/completions") { request, _ in await self.generate(request, chat: false) }
        var logger = Logger(label: "moekit.server")
        logger.logLevel = .critical  // connections closing after each completion are not news
        return Application(router: router,
                           configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "moekit"),
                           onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) },
                           logger: logger)
    }

    func json(_ value: JinjaValue, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: value.jsonText)))
    }

    func error(_ e: APIError, endpoint: String) -> Response {
        metrics.request(endpoint: endpoint, status: e.status)
        var body = ByteBuffer()
        body.writeBytes(e.body)
        return Response(status: .init(code: e.status), headers: [.contentType: "application/json"], body: .init(byteBuffer: body))
    }

    /// Reads, checks and runs a completion request; answers it whole or as a stream. The
    /// connection closes after the answer (`Connection: close`): watching it for the client
    /// leaving, which cancels the generation, ends its keep-alive.
    func generate(_ request: Request, chat: Bool) async -> Response {
        var response = await generateWatchingClient(request, chat: chat)
        response.headers[.connection] = "close"
        return response
    }

    private func generateWatchingClient(_ request: Request, chat: Bool) async -> Response {
        let endpoint = chat ? "/v1/chat/completions" : "/v1/completions"
        let cancel = CancelBox(engine: engine)
        do {
            return try await request.body.consumeWithInboundCloseHandler({ body in
                let buffer: ByteBuffer
                do { buffer = try await body.collect(upTo: self.configuration.maxBodyBytes) } catch {
                    return self.error(APIError(status: 413, message: "The request body is larger than \(self.configuration.maxBodyBytes) bytes.",
                                               type: "invalid_request_error"), endpoint: endpoint)
                }
                let job: GenerationJob
                do {
                    let object = try RequestParser.object(Data(buffer.readableBytesView))
                    job = chat ? try self.parser.chat(object) : try self.parser.completion(object)
                } catch let e as APIError {
                    return self.error(e, endpoint: endpoint)
                }
                return try await self.respond(job, chat: chat, endpoint: endpoint, cancel: cancel)
            }, onInboundClosed: { cancel.inboundClosed() })
        } catch let e as APIError {
            return error(e, endpoint: endpoint)
        } catch {
            return self.error(APIError(status: 500, message: "\(error)", type: "server_error"), endpoint: endpoint)
        }
    }

    /// Submits every choice of `job` and merges their events into one stream.
    func submit(_ job: GenerationJob, cancel: CancelBox) throws(APIError) -> AsyncStream<(Int, BatchEvent)> {
        let (stream, continuation) = AsyncStream<(Int, BatchEvent)>.makeStream()
        let total = job.prompts.count * job.n
        let remaining = Remaining(total)
        for p in 0..<job.prompts.count {
            for c in 0..<job.n {
                let index = p * job.n + c
                do {
                    let id = try engine.submit(job.request(prompt: p, choice: c)) { event in
                        continuation.yield((index, event))
                        switch event {
                        case .finished, .failed: if remaining.done() { continuation.finish() }
                        case .token: break
                        }
                    }
                    cancel.add(id)
                } catch {
                    cancel.cancelAll()
                    continuation.finish()
                    switch error {
                    case .queueFull: throw APIError(status: 429, message: error.description, type: "rate_limit_error", code: "rate_limit_exceeded")
                    case .stopped: throw APIError(status: 503, message: error.description, type: "server_error")
                    case .invalid(let m): throw APIError.invalid(m, param: "moe")
                    }
                }
            }
        }
        return stream
    }

    func respond(_ job: GenerationJob, chat: Bool, endpoint: String, cancel: CancelBox) async throws -> Response {
        let builder = ResponseBuilder(id: (chat ? "chatcmpl-" : "cmpl-") + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased(),
                                      created: Int(Date().timeIntervalSince1970), model: configuration.modelName, chat: chat,
                                      tokenizer: tokenizer)
        let events: AsyncStream<(Int, BatchEvent)>
        do { events = try submit(job, cancel: cancel) } catch { return self.error(error, endpoint: endpoint) }
        let promptTokens = job.prompts.map(\.count).reduce(0, +)
        if job.stream {
            // The handler returns before the stream is written: a failed write, not the end of
            // the request's inbound side, tells that the client left.
            cancel.detachFromInbound()
            metrics.request(endpoint: endpoint, status: 200)
            return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
                            body: ResponseBody { writer in
                                do {
                                    try await self.stream(events, job: job, builder: builder, promptTokens: promptTokens, into: &writer)
                                } catch {
                                    cancel.cancelAll()  // the client went away
                                    throw error
                                }
                            })
        }
        var results = [ChoiceResult](repeating: ChoiceResult(), count: job.prompts.count * job.n)
        for await (i, event) in events {
            switch event {
            case let .token(id, text, logprob, alternatives, experts):
                results[i].text += text
                results[i].tokens.append(id)
                if let logprob { results[i].logprobs.append(logprob); results[i].alternatives.append(alternatives) }
                if let experts { results[i].experts.append(experts) }
            case let .finished(f):
                results[i].text = f.text
                results[i].finishReason = ResponseBuilder.finishReason(f.reason)
                results[i].completionTokens = f.completionTokens
                metrics.finished(f)
            case let .failed(m):
                cancel.cancelAll()
                return self.error(APIError(status: 500, message: m, type: "server_error"), endpoint: endpoint)
            }
        }
        metrics.request(endpoint: endpoint, status: 200)
        return json(builder.complete(results, promptTokens: promptTokens, returnRouting: job.returnRouting))
    }

    /// Writes the server-sent events of a streamed response, ending with `data: [DONE]`.
    func stream(_ events: AsyncStream<(Int, BatchEvent)>, job: GenerationJob, builder: ResponseBuilder, promptTokens: Int,
                into writer: inout any ResponseBodyWriter) async throws {
        func send(_ v: JinjaValue) async throws { try await writer.write(ByteBuffer(string: "data: \(v.jsonText)\n\n")) }
        let total = job.prompts.count * job.n
        if builder.chat {
            for i in 0..<total { try await send(builder.chunk(index: i, text: "", role: true)) }
        }
        var results = [ChoiceResult](repeating: ChoiceResult(), count: total)
        var completion = 0
        for await (i, event) in events {
            switch event {
            case let .token(id, text, logprob, alternatives, experts):
                results[i].tokens.append(id)
                let offset = results[i].text.count
                results[i].text += text
                var lp: JinjaValue = .none
                if let logprob {
                    results[i].logprobs.append(logprob)
                    results[i].alternatives.append(alternatives)
                    lp = builder.logprobs(results[i], from: results[i].logprobs.count - 1, textOffset: offset)
                }
                var routing: JinjaValue? = nil
                if let experts {
                    results[i].experts.append(experts)
                    routing = builder.routing(results[i], from: results[i].experts.count - 1)
                }
                if !text.isEmpty || logprob != nil || routing != nil {
                    try await send(builder.chunk(index: i, text: text, logprobs: lp, routing: routing))
                }
            case let .finished(f):
                metrics.finished(f)
                completion += f.completionTokens
                try await send(builder.chunk(index: i, text: builder.chat ? nil : "", finishReason: ResponseBuilder.finishReason(f.reason)))
            case let .failed(m):
                let e = APIError(status: 500, message: m, type: "server_error")
                try await writer.write(ByteBuffer(string: "data: \(String(decoding: e.body, as: UTF8.self))\n\n"))
            }
        }
        if job.includeUsage { try await send(builder.usageChunk(prompt: promptTokens, completion: completion)) }
        try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
        try await writer.finish(nil)
    }
}

/// The engine ids of one HTTP request's choices, cancelled together when its client leaves.
final class CancelBox: @unchecked Sendable {
    private let engine: BatchEngine
    private let lock = NSLock()
    private var ids: [Int] = []
    private var cancelled = false
    private var followsInbound = true

    init(engine: BatchEngine) { self.engine = engine }

    /// The connection's inbound side closed: cancels, unless the response is a stream.
    func inboundClosed() {
        lock.lock()
        let follow = followsInbound
        lock.unlock()
        if follow { cancelAll() }
    }

    /// From now on only `cancelAll` cancels (a streamed response watches its writes instead).
    func detachFromInbound() {
        lock.lock()
        followsInbound = false
        lock.unlock()
    }

    func add(_ id: Int) {
        lock.lock()
        ids.append(id)
        let now = cancelled
        lock.unlock()
        if now { engine.cancel(id) }
    }

    func cancelAll() {
        lock.lock()
        cancelled = true
        let all = ids
        lock.unlock()
        for id in all { engine.cancel(id) }
    }
}

/// Counts down the choices of a request still running.
final class Remaining: @unchecked Sendable {
    private let lock = NSLock()
    private var left: Int
    init(_ n: Int) { left = n }
    /// Marks one finished; true when it was the last.
    func done() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        left -= 1
        return left == 0
    }
}

/// Requires `Authorization: Bearer <key>` on every path but `/health` when a key is set.
struct AuthMiddleware<Context: RequestContext>: RouterMiddleware {
    let key: String?
    let maxBodyBytes: Int

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let key, request.uri.path != "/health" else { return try await next(request, context) }
        let given = request.headers[.authorization] ?? ""
        guard constantTimeEqual(given, "Bearer " + key) else {
            // Read the (bounded) body so the connection stays usable for the next request.
            _ = try? await request.body.collect(upTo: maxBodyBytes)
            var body = ByteBuffer()
            body.writeBytes(APIError.unauthorized.body)
            return Response(status: .unauthorized, headers: [.contentType: "application/json"], body: .init(byteBuffer: body))
        }
        return try await next(request, context)
    }

    /// Compares without stopping at the first difference.
    private func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        var diff = UInt8(x.count == y.count ? 0 : 1)
        for i in 0..<max(x.count, y.count) { diff |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0) }
        return diff == 0
    }
}
