import Foundation
import XCTest

/// `moe chat-template` and `moe generate --chat` on a model folder given Qwen3's real chat
/// template: the prompt equals jinja2's render (from the committed fixtures), a GGUF made
/// from the folder carries the template, and a model without one is a clear error.
final class ChatTemplateCLITests: XCTestCase {
    /// Runs the built `moe` with `arguments`: exit status, standard output, standard error.
    func moe(_ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
        try runMoe(arguments)
    }
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The embedded model's files plus Qwen3's template and a tokenizer_config.json.
    func chatModel() throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("moe-chat-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let model = repo.appendingPathComponent("Sources/moe/DefaultModel")
        for name in ["config.json", "model.safetensors", "tokenizer.json"] {
            try FileManager.default.createSymbolicLink(at: folder.appendingPathComponent(name),
                                                       withDestinationURL: model.appendingPathComponent(name))
        }
        let template = repo.appendingPathComponent("Tests/Fixtures/chat_templates/templates/Qwen-Qwen3-0.6B.jinja")
        try FileManager.default.copyItem(at: template, to: folder.appendingPathComponent("chat_template.jinja"))
        try Data(#"{"bos_token": "<s>", "eos_token": {"content": "</s>"}, "unk_token": "<unk>", "pad_token": "<pad>"}"#.utf8)
            .write(to: folder.appendingPathComponent("tokenizer_config.json"))
        return folder
    }

    /// jinja2's render of Qwen3's template on the fixture case `name`.
    func expected(_ name: String) throws -> String {
        let data = try Data(contentsOf: repo.appendingPathComponent("Tests/Fixtures/chat_templates/expected.json"))
        let all = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: [String: [String: String]]])
        return try XCTUnwrap(all["Qwen-Qwen3-0.6B.jinja"]?[name]?["output"])
    }

    func testChatTemplateRendersAsJinja2() throws {
        let folder = try chatModel()
        defer { try? FileManager.default.removeItem(at: folder) }
        let run = try moe(["chat-template", "--model", folder.path, "--prompt", "Hello, who are you?"])
        XCTAssertEqual(run.status, 0, run.err)
        XCTAssertEqual(run.out, try expected("user"))

        // A whole conversation from a file, with tools-free multi-turn history.
        let messages = folder.appendingPathComponent("messages.json")
        try Data(#"[{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "2+2 equals 4."}, {"role": "user", "content": "And 3+3?"}]"#.utf8).write(to: messages)
        let multi = try moe(["chat-template", "--model", folder.path, "--messages", messages.path])
        XCTAssertEqual(multi.status, 0, multi.err)
        XCTAssertEqual(multi.out, try expected("system_multi_turn"))

        let json = try moe(["chat-template", "--model", folder.path, "--prompt", "Hi", "--json"])
        XCTAssertEqual(json.status, 0, json.err)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.out.utf8)) as? [String: Any])
        XCTAssertEqual(object["text"] as? String, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        XCTAssertFalse((object["ids"] as? [Int] ?? []).isEmpty)

        // generate --chat runs on the rendered prompt.
        let gen = try moe(["generate", "--model", folder.path, "--chat", "--prompt", "Hi", "--max-tokens", "3", "--json"])
        XCTAssertEqual(gen.status, 0, gen.err)

        // A GGUF converted from the folder carries the template and renders the same.
        let gguf = folder.appendingPathComponent("model.gguf")
        let quant = try moe(["quantize", "--model", folder.path, "--type", "q8_0", "--out", gguf.path])
        XCTAssertEqual(quant.status, 0, quant.err)
        let fromGGUF = try moe(["chat-template", "--model", gguf.path, "--messages", messages.path])
        XCTAssertEqual(fromGGUF.status, 0, fromGGUF.err)
        XCTAssertEqual(fromGGUF.out, try expected("system_multi_turn"))
    }

    func testChatErrorsAreClear() throws {
        // The embedded model has no template.
        let none = try moe(["generate", "--chat", "--prompt", "Hi", "--max-tokens", "1"])
        XCTAssertEqual(none.status, 1)
        XCTAssertTrue(none.err.contains("chat_template"), none.err)
        XCTAssertTrue(none.out.isEmpty)

        let folder = try chatModel()
        defer { try? FileManager.default.removeItem(at: folder) }
        let bad = folder.appendingPathComponent("bad.jinja")
        try Data("{% if messages %}\nunclosed".utf8).write(to: bad)
        let broken = try moe(["chat-template", "--model", folder.path, "--prompt", "Hi", "--chat-template", bad.path])
        XCTAssertEqual(broken.status, 1)
        XCTAssertTrue(broken.err.contains("bad.jinja") && broken.err.contains("line"), broken.err)

        let raising = folder.appendingPathComponent("raise.jinja")
        try Data("{{ raise_exception('roles must alternate') }}".utf8).write(to: raising)
        let raised = try moe(["chat-template", "--model", folder.path, "--prompt", "Hi", "--chat-template", raising.path])
        XCTAssertEqual(raised.status, 1)
        XCTAssertTrue(raised.err.contains("roles must alternate"), raised.err)

        let messages = folder.appendingPathComponent("m.json")
        try Data(#"[{"content": "no role"}]"#.utf8).write(to: messages)
        let noRole = try moe(["chat-template", "--model", folder.path, "--messages", messages.path])
        XCTAssertEqual(noRole.status, 1)
        XCTAssertTrue(noRole.err.contains("m.json") && noRole.err.contains("role"), noRole.err)

        let needsChat = try moe(["generate", "--system", "x", "--prompt", "Hi"])
        XCTAssertEqual(needsChat.status, 64)
    }
}
