import Foundation
import MoECore
import MoEModels

/// Instruction-tuning examples from JSONL files, with the loss on the answers only. Each line is
/// `{"messages": [{"role": ..., "content": ...}, ...]}`, rendered through the model's chat
/// template, whose assistant turns are the targets; or `{"prompt": ..., "completion": ...}`,
/// which is BOS + prompt + completion + EOS with the completion and EOS the targets.
///
/// A conversation's assistant turn i spans, in the rendering of the whole conversation, from the
/// end of `render(messages[..<i], add_generation_prompt: true)` to the end of
/// `render(messages[...i])` (its end-of-turn tokens included, so the model learns to stop);
/// each rendering must be a prefix of the next, as `apply_chat_template` with
/// `return_assistant_tokens_mask` assumes. Text and answer spans are tokenized span by span.
public final class InstructionCorpus: @unchecked Sendable {
    /// One example: token ids, and per id whether it is a target (an answer token).
    public struct Example: Sendable, Equatable {
        public var ids: [Int]
        /// Whether each token is part of an answer (the tokens the loss counts).
        public var answer: [Bool]
        public init(ids: [Int], answer: [Bool]) {
            precondition(ids.count == answer.count, "Example: \(ids.count) ids, \(answer.count) answer flags")
            self.ids = ids
            self.answer = answer
        }
    }
    public let examples: [Example]
    let eos: Int

    /// Text these files may hold in all: 1 GiB.
    public static let maxBytes = 1 << 30

    /// Reads and tokenizes `paths`; `chat` renders `messages` lines (nil: only prompt and
    /// completion lines are accepted). Throws `MoECoreError.invalidValue` naming the file, line
    /// and field of a malformed line, or a corpus with no answer tokens.
    public init(paths: [String], tokenizer: any TrainingTokenizer, chat: ChatFormat?) throws {
        var examples: [Example] = [], total = 0
        eos = tokenizer.eosID ?? 0
        for path in paths {
            let file = try MappedFile(path: path)
            total += file.byteCount
            guard total <= Self.maxBytes else {
                throw MoECoreError.invalidValue(path: path, field: "jsonl", reason: "more than \(Self.maxBytes) bytes of examples")
            }
            let text = String(decoding: UnsafeRawBufferPointer(start: file.base, count: file.byteCount), as: UTF8.self)
            for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
                guard !trimmed.isEmpty else { continue }
                func bad(_ field: String, _ reason: String) -> MoECoreError {
                    .invalidValue(path: path, field: "line \(n + 1): \(field)", reason: reason)
                }
                guard let object = (try? JSONSerialization.jsonObject(with: Data(trimmed.utf8))) as? [String: Any] else {
                    throw bad("(json)", "not a JSON object")
                }
                if let prompt = object["prompt"], let completion = object["completion"] {
                    guard let p = prompt as? String, let c = completion as? String else { throw bad("prompt", "prompt and completion must be strings") }
                    let head = tokenizer.encode(p, bos: true), tail = tokenizer.encode(c) + (tokenizer.eosID.map { [$0] } ?? [])
                    examples.append(Example(ids: head + tail, answer: head.map { _ in false } + tail.map { _ in true }))
                } else if object["messages"] != nil {
                    guard let chat else { throw bad("messages", "the model has no chat template (give prompt and completion, or data.chat_template)") }
                    let messages: [JinjaValue]
                    do {
                        guard case let .dict(d) = try JinjaValue.parseJSON(String(trimmed)), case let .list(list)? = d["messages"],
                              !list.isEmpty else { throw bad("messages", "must be a non-empty list") }
                        messages = list
                    } catch let e as MoECoreError { throw e } catch { throw bad("(json)", "\(error)") }
                    examples.append(try Self.conversation(messages, chat: chat, tokenizer: tokenizer) { bad("messages", $0) })
                } else {
                    throw bad("(keys)", "needs messages, or prompt and completion")
                }
            }
        }
        guard examples.contains(where: { $0.answer.contains(true) }) else {
            throw MoECoreError.invalidValue(path: paths.first, field: "jsonl", reason: "no example has an answer to train on")
        }
        self.examples = examples
    }

    /// A conversation's ids and answer mask, through `chat`.
    static func conversation(_ messages: [JinjaValue], chat: ChatFormat, tokenizer: any TrainingTokenizer,
                             bad: (String) -> MoECoreError) throws -> Example {
        func role(_ m: JinjaValue) -> String? {
            guard case let .dict(d) = m, case let .string(r)? = d["role"] else { return nil }
            return r
        }
        guard messages.allSatisfy({ role($0) != nil }) else { throw bad("every message needs a string role") }
        let full = Array(try chat.prompt(messages: messages, addGenerationPrompt: false).utf8)
        var spans: [(bytes: ArraySlice<UInt8>, answer: Bool)] = [], done = 0
        for i in messages.indices where role(messages[i]) == "assistant" {
            let before = Array(try chat.prompt(messages: Array(messages[..<i]), addGenerationPrompt: true).utf8)
            let through = Array(try chat.prompt(messages: Array(messages[...i]), addGenerationPrompt: false).utf8)
            guard full.starts(with: through), through.starts(with: before) else {
                throw bad("the chat template's rendering up to turn \(i) is not a prefix of the whole conversation's")
            }
            guard before.count >= done else { throw bad("turn \(i) starts inside the turn before") }
            spans.append((full[done..<before.count], false))
            spans.append((full[before.count..<through.count], true))
            done = through.count
        }
        spans.append((full[done...], false))
        var example = Example(ids: [], answer: [])
        for (bytes, answer) in spans where !bytes.isEmpty {
            let ids = tokenizer.encode(String(decoding: bytes, as: UTF8.self))
            example.ids += ids
            example.answer += Array(repeating: answer, count: ids.count)
        }
        return example
    }

    /// How many examples have no answer token within their first `length + 1` ids (a batch
    /// cuts them there, so they train nothing).
    public func unanswered(length: Int) -> Int {
        examples.filter { !$0.answer.prefix(length + 1).dropFirst().contains(true) }.count
    }

    /// `batch` examples drawn by `rng`, each cut to `length + 1` ids or padded with EOS: inputs
    /// the first `length`, targets the last `length`, a target -1 (no loss) unless it is an
    /// answer token.
    public func batch(_ batch: Int, length: Int, rng: inout SplitMix64) -> (inputs: [[Int]], targets: [[Int]]) {
        var inputs: [[Int]] = [], targets: [[Int]] = []
        for _ in 0..<batch {
            let e = examples[Int(rng.next() % UInt64(examples.count))]
            let n = min(e.ids.count, length + 1)
            let ids = Array(e.ids.prefix(n)) + Array(repeating: eos, count: length + 1 - n)
            let answer = Array(e.answer.prefix(n)) + Array(repeating: false, count: length + 1 - n)
            inputs.append(Array(ids.dropLast()))
            targets.append((1...length).map { answer[$0] ? ids[$0] : -1 })
        }
        return (inputs, targets)
    }
}
