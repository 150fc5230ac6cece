import ArgumentParser
import Foundation
import MoECore
import MoEModels
import MoETrain

/// `moe skills`: a library of LoRA skills, K-shot selection and parameter-space composition.
struct Skills: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A library of LoRA skills: add adapters with metadata, list them, pick the best and most diverse on K examples of a new task, and compose them into one adapter.",
        subcommands: [Add.self, List.self, Select.self, Compose.self])

    struct LibraryOption: ParsableArguments {
        @Option(help: "The skill library folder.") var library: String
    }

    struct ShotOptions: ParsableArguments {
        @Option(help: "The base model the skills were trained on.") var model: String
        @Option(help: "K examples of the new task (JSONL: messages, or prompt and completion).") var shots: String
        @Option(name: .customLong("chat-template"), help: "A Jinja chat template file in place of the model's own.") var chatTemplate: String?
        @Option(help: "Threads to run on (default: the active cores).") var threads: Int?
        func scorer() throws -> SkillSelection.Scorer {
            try SkillSelection.Scorer(base: model, shots: shots, chatTemplate: chatTemplate,
                                      pool: ThreadPool(threads: threads ?? ThreadPool.defaultThreadCount))
        }
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a PEFT adapter folder to the library (checked against its base).")
        @OptionGroup var library: LibraryOption
        @Option(help: "The adapter folder.") var adapter: String
        @Option(help: "The entry's name.") var name: String
        @Option(help: "The base model the adapter was trained on.") var model: String
        @Option(help: "Comma-separated task tags.") var tags: String = ""
        @Option(help: "The training data file (its hash is recorded).") var data: String?
        func run() throws {
            let tags = self.tags.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            try SkillLibrary(path: library.library).add(adapter: adapter, name: name, base: model, tags: tags, data: data)
            try printJSON(["added": name])
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the library's skills as JSON.")
        @OptionGroup var library: LibraryOption
        func run() throws {
            try printJSON(try SkillLibrary(path: library.library).skills())
        }
    }

    struct Select: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Rank the skills trained on --model by their loss on the K shots, and choose --k of them, good and diverse.")
        @OptionGroup var library: LibraryOption
        @OptionGroup var shots: ShotOptions
        @Option(help: "Skills to choose.") var k = 2
        @Option(help: "Weight of diversity: each candidate's loss is raised by this times its largest cosine similarity (of weight deltas) to those chosen.")
        var diversity = 0.1
        func validate() throws {
            guard k >= 1 else { throw ValidationError("--k must be at least 1") }
            guard diversity >= 0, diversity.isFinite else { throw ValidationError("--diversity must be finite and not negative") }
        }
        func run() throws {
            let (ranking, chosen, base) = try SkillSelection.select(library: SkillLibrary(path: library.library), scorer: shots.scorer(),
                                                                  k: k, diversity: diversity)
            struct Out: Encodable { var base_loss: Double; var ranking: [SkillSelection.Ranked]; var chosen: [SkillSelection.Ranked] }
            try printJSON(Out(base_loss: base, ranking: ranking, chosen: chosen))
        }
    }

    struct Compose: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Merge skills in parameter space into one PEFT adapter: a weighted sum of their deltas, the weights given or searched on the K shots.")
        @OptionGroup var library: LibraryOption
        @OptionGroup var shots: ShotOptions
        @Option(help: "Comma-separated skill names.") var skills: String
        @Option(help: "Comma-separated weights, one per skill (default: searched on the shots).") var weights: String?
        @Option(help: "The composed adapter folder (must not exist).") var out: String
        func run() throws {
            let names = skills.split(separator: ",").map(String.init)
            guard !names.isEmpty else { throw ValidationError("--skills: give at least one skill") }
            guard !FileManager.default.fileExists(atPath: out) else { throw ModelError.io(path: out, reason: "already exists; not overwritten") }
            let lib = SkillLibrary(path: library.library)
            let entries = try lib.skills(for: shots.model, only: names)
            let adapters = try entries.map { try LoRAAdapterFolder(path: lib.folder(of: $0.name)) }
            let scorer = try shots.scorer()
            var chosen: [Double]
            if let weights {
                chosen = weights.split(separator: ",").compactMap { Double($0) }
                guard chosen.count == names.count, chosen.allSatisfy(\.isFinite) else {
                    throw ValidationError("--weights: give \(names.count) numbers, one per skill")
                }
            } else {
                let scratch = out + ".search-\(getpid())"
                defer { try? FileManager.default.removeItem(atPath: scratch) }
                chosen = try SkillSelection.searchWeights(adapters, scorer: scorer, scratch: scratch).weights
            }
            let temporary = out + ".tmp-\(getpid())"
            try? FileManager.default.removeItem(atPath: temporary)
            try SkillSelection.compose(adapters, weights: chosen, base: shots.model, to: temporary)
            guard rename(temporary, out) == 0 else { throw ModelError.io(path: out, reason: "cannot rename into place") }
            var single: [String: Double] = [:]
            for e in entries { single[e.name] = try scorer.loss(adapters: [lib.folder(of: e.name)]) }
            struct Out: Encodable { var out: String; var weights: [String: Double]; var loss: Double; var base_loss: Double; var single_losses: [String: Double] }
            try printJSON(Out(out: out, weights: Dictionary(uniqueKeysWithValues: zip(names, chosen)),
                              loss: try scorer.loss(adapters: [out]), base_loss: try scorer.loss(adapters: []), single_losses: single))
        }
    }
}
