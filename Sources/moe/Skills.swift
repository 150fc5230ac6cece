import ArgumentParser
import Foundation
import MoECore
import MoEModels
import MoETrain

/// `moe skills`: a library of LoRA skills, K-shot selection and parameter-space composition.
struct Skills: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A library of LoRA skills: add adapters with metadata, list them, pick the best and most diverse on K examples of a new task, compose them into one adapter, or mount them as LoRA experts behind routers trained on the examples.",
        subcommands: [Add.self, List.self, Select.self, Compose.self, Mount.self])

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

    /// The named skills of `library` for the shots' model, their adapters, the shots' scorer, and
    /// the weights given (one per skill) or else searched on the shots (scratch beside `out`).
    static func chooseSkills(_ names: [String], library path: String, shots: ShotOptions, weights: String?, out: String) throws
        -> (SkillLibrary, [SkillLibrary.Skill], [LoRAAdapterFolder], SkillSelection.Scorer, [Double]) {
        let lib = SkillLibrary(path: path)
        let entries = try lib.skills(for: shots.model, only: names)
        let adapters = try entries.map { try LoRAAdapterFolder(path: lib.folder(of: $0.name)) }
        let scorer = try shots.scorer()
        if let weights {
            let chosen = weights.split(separator: ",").compactMap { Double($0) }
            guard chosen.count == names.count, chosen.allSatisfy(\.isFinite) else {
                throw ValidationError("--weights: give \(names.count) numbers, one per skill")
            }
            return (lib, entries, adapters, scorer, chosen)
        }
        let scratch = out + ".search-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        return (lib, entries, adapters, scorer, try SkillSelection.searchWeights(adapters, scorer: scorer, scratch: scratch).weights)
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

    struct Mount: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Mount skills as LoRA experts (MixLoRA's layout): on each dense FFN, skill i's adapters become expert i behind a router trained on the K shots (all else frozen); the skills' other modules are composed with --weights (default: searched).")
        @OptionGroup var library: LibraryOption
        @OptionGroup var shots: ShotOptions
        @Option(help: "Comma-separated skill names (at least two).") var skills: String
        @Option(help: "Comma-separated weights for the composed non-FFN modules, one per skill (default: searched on the shots).") var weights: String?
        @Option(name: .customLong("top-k"), help: "Experts each token mixes (default: every skill).") var topK: Int?
        @Option(help: "Passes over the shots that train the routers.") var steps = 60
        @Option(help: "The routers' learning rate.") var lr: Float = 0.01
        @Option(help: "The mounted adapter folder (must not exist).") var out: String
        @Option(help: "Other examples of the task (JSONL) to report the mounted adapter's and the base's loss on.") var eval: String?
        func validate() throws {
            guard (1...100_000).contains(steps) else { throw ValidationError("--steps must be in 1...100000") }
            guard lr.isFinite && lr > 0 else { throw ValidationError("--lr must be positive and finite") }
            if let k = topK, k < 1 { throw ValidationError("--top-k must be at least 1") }
        }
        func run() throws {
            let names = skills.split(separator: ",").map(String.init)
            guard names.count >= 2 else { throw ValidationError("--skills: mount at least two skills") }
            guard !FileManager.default.fileExists(atPath: out) else { throw ModelError.io(path: out, reason: "already exists; not overwritten") }
            let (_, _, adapters, scorer, chosen) = try Skills.chooseSkills(names, library: library.library, shots: shots, weights: weights, out: out)
            var options = SkillSelection.MountOptions()
            (options.topK, options.steps, options.lr) = (topK, steps, lr)
            let temporary = out + ".tmp-\(getpid())"
            try? FileManager.default.removeItem(atPath: temporary)
            defer { try? FileManager.default.removeItem(atPath: temporary) }
            let (before, _) = try SkillSelection.mount(adapters, weights: chosen, base: shots.model, shots: scorer.examples, options: options,
                                                           to: temporary, pool: ThreadPool(threads: shots.threads ?? ThreadPool.defaultThreadCount))
            guard rename(temporary, out) == 0 else { throw ModelError.io(path: out, reason: "cannot rename into place") }
            struct Out: Encodable {
                var out: String; var weights: [String: Double]; var loss_before_routing: Double; var loss: Double; var base_loss: Double
                var eval_loss: Double?, eval_base_loss: Double?
            }
            let held = try eval.map { try SkillSelection.Scorer(base: shots.model, shots: $0, chatTemplate: shots.chatTemplate) }
            try printJSON(Out(out: out, weights: Dictionary(uniqueKeysWithValues: zip(names, chosen)), loss_before_routing: before,
                              loss: try scorer.loss(adapters: [out]), base_loss: try scorer.loss(adapters: []),
                              eval_loss: try held?.loss(adapters: [out]), eval_base_loss: try held?.loss(adapters: [])))
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
            let (lib, entries, adapters, scorer, chosen) = try Skills.chooseSkills(names, library: library.library, shots: shots, weights: weights, out: out)
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
