import Foundation
import MoECore
import MoEModels
import MoETrain
import _TestSupport
import XCTest

/// Instruction data for fine-tuning: the answer tokens (the loss's targets) are exactly each
/// assistant turn with its end-of-turn text, through real chat templates (Qwen2.5's ChatML,
/// Mixtral's [INST]); prompt and completion lines; malformed lines refused by file, line and field.
final class InstructionCorpusTests: XCTestCase {
    let templates = trainFixture.deletingLastPathComponent().appendingPathComponent("chat_templates/templates")

    func corpus(_ lines: [String], template: String?, special: [String: String] = [:]) throws -> InstructionCorpus {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-jsonl-\(UUID().uuidString).jsonl")
        addTeardownBlock { try? FileManager.default.removeItem(at: file) }
        try Data(lines.joined(separator: "\n").utf8).write(to: file)
        let chat = try template.map { name in
            ChatFormat(template: try ChatTemplate(String(contentsOf: templates.appendingPathComponent(name), encoding: .utf8)),
                       specialTokens: special, origin: name)
        }
        return try InstructionCorpus(paths: [file.path], tokenizer: ByteTokenizer(), chat: chat)
    }

    /// The answer spans of an example, decoded, and the whole text.
    func answers(_ e: InstructionCorpus.Example) -> (spans: [String], text: String) {
        var spans: [String] = [], current: [Int] = []
        for (id, answer) in zip(e.ids, e.answer) {
            if answer { current.append(id) } else if !current.isEmpty { spans.append(ByteTokenizer().decode(current)); current = [] }
        }
        if !current.isEmpty { spans.append(ByteTokenizer().decode(current)) }
        return (spans, ByteTokenizer().decode(e.ids))
    }

    let conversation = #"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}, {"role": "assistant", "content": "6"}]}"#

    func testChatMLAssistantTurnsAreTheTargets() throws {
        let c = try corpus([conversation], template: "Qwen-Qwen2.5-7B-Instruct.jinja")
        let (spans, text) = answers(try XCTUnwrap(c.examples.first))
        XCTAssertEqual(spans, ["4<|im_end|>\n", "6<|im_end|>\n"])
        XCTAssertTrue(text.hasPrefix("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"), text)
    }

    func testMixtralInstAssistantTurnsAreTheTargets() throws {
        let c = try corpus([#"{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}, {"role": "user", "content": "3+3?"}, {"role": "assistant", "content": "6"}]}"#],
                           template: "mistralai-Mixtral-8x7B-Instruct-v0.1.jinja", special: ["bos_token": "<s>", "eos_token": "</s>"])
        let (spans, text) = answers(try XCTUnwrap(c.examples.first))
        XCTAssertEqual(text, "<s>[INST] 2+2? [/INST]4</s>[INST] 3+3? [/INST]6</s>")
        XCTAssertEqual(spans, ["4</s>", "6</s>"])
    }

    func testPromptCompletionAndBatchTargets() throws {
        let c = try corpus([#"{"prompt": "Q: hi\nA: ", "completion": "hello"}"#], template: nil)
        let e = try XCTUnwrap(c.examples.first)
        XCTAssertEqual(e.ids, [ByteTokenizer.bos] + Array("Q: hi\nA: hello".utf8).map(Int.init) + [ByteTokenizer.eos])
        XCTAssertEqual(answers(e).spans, ["hello"])  // and EOS, which decodes to nothing
        XCTAssertEqual(e.answer.filter { $0 }.count, 6)
        var rng = SplitMix64(seed: 1)
        let (inputs, targets) = c.batch(2, length: 20, rng: &rng)
        XCTAssertEqual(inputs[0].count, 20)
        // Targets: -1 up to the completion, then "hello", EOS, and -1 over the padding.
        XCTAssertEqual(targets[0], Array(repeating: -1, count: 9) + Array("hello".utf8).map(Int.init) + [ByteTokenizer.eos]
            + Array(repeating: -1, count: 5))
    }

    func testMalformedLinesAreRefusedByLineAndField() throws {
        let cases: [(lines: [String], template: String?, mentions: [String])] = [
            ([#"{"prompt": "a", "completion": "b"}"#, "not json"], nil, ["line 2", "JSON"]),
            ([#"{"prompt": "a"}"#], nil, ["line 1", "messages, or prompt and completion"]),
            ([#"{"prompt": 1, "completion": "b"}"#], nil, ["line 1", "strings"]),
            ([conversation], nil, ["line 1", "no chat template"]),
            ([#"{"messages": []}"#], "Qwen-Qwen2.5-7B-Instruct.jinja", ["line 1", "non-empty"]),
            ([#"{"messages": [{"content": "x"}]}"#], "Qwen-Qwen2.5-7B-Instruct.jinja", ["line 1", "role"]),
            ([#"{"messages": [{"role": "user", "content": "hi"}]}"#], "Qwen-Qwen2.5-7B-Instruct.jinja", ["no example has an answer"]),
        ]
        for c in cases {
            XCTAssertThrowsError(try corpus(c.lines, template: c.template), "\(c.lines)") { error in
                for m in c.mentions { XCTAssertTrue("\(error)".contains(m), "\(error) should mention \(m)") }
            }
        }
    }
}
