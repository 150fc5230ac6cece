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

    /// The skills a composition or a mount takes, their weights, and the folder it writes.
    struct ChoiceOptions: ParsableArguments {
        @OptionGroup var library: LibraryOption
        @OptionGroup var shots: ShotOptions
        @Option(help: "Comma-separated skill names.") var skills: String
        @Option(help: "Comma-separated weights, one per skill, for the modules composed in parameter space (default: searched on the shots).")
        var weights: String?
        @Option(help: "The adapter folder to write (must not exist).") var out: String

        /// The chosen skills (at least `least`), their adapters, the shots' scorer, and the weights
        /// given or else searched on the shots (scratch beside `out`); `out` must not exist.
        func choose(atLeast least: Int) throws
            -> (names: [String], lib: SkillLibrary, entries: [SkillLibrary.Skill], adapters: [LoRAAdapterFolder], scorer: SkillSelection.Scorer, weights: [Double]) {
            let names = skills.split(separator: ",").map(String.init)
            guard names.count >= least else { throw ValidationError("--skills: give at least \(least == 1 ? "one skill" : "two skills")") }
            guard !FileManager.default.fileExists(atPath: out) else { throw ModelError.io(path: out, reason: "already exists; not overwritten") }
            let lib = SkillLibrary(path: library.library)
            let entries = try lib.skills(for: shots.model, only: names)
            let adapters = try entries.map { try LoRAAdapterFolder(path: lib.folder(of: $0.name)) }
            let scorer = try shots.scorer()
            if let weights {
                let chosen = weights.split(separator: ",").compactMap { Double($0) }
                guard chosen.count == names.count, chosen.allSatisfy(\.isFinite) else {
                    throw ValidationError("--weights: give \(names.count) numbers, one per skill")
                }
                return (names, lib, entries, adapters, scorer, chosen)
            }
            let scratch = out + ".search-\(getpid())"
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            return (names, lib, entries, adapters, scorer, try SkillSelection.searchWeights(adapters, scorer: scorer, scratch: scratch).weights)
        }

        /// Runs `write` into a temporary folder beside `out`, then renames it into place (removed
        /// if `write` throws).
        func place<T>(_ write: (String) throws -> T) throws -> T {
            let temporary = out + ".tmp-\(getpid())"
            try? FileManager.default.removeItem(atPath: temporary)
            defer { try? FileManager.default.removeItem(atPath: temporary) }
            let result = try write(temporary)
            guard rename(temporary, out) == 0 else { throw ModelError.io(path: out, reason: "cannot rename into place") }
            return result
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

    struct Mount: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Mount skills as LoRA experts (MixLoRA's layout): on each dense FFN, skill i's adapters become expert i behind a router trained on the K shots (all else frozen); the skills' other modules are composed with --weights (default: searched).")
        @OptionGroup var choice: ChoiceOptions
        @Option(name: .customLong("top-k"), help: "Experts each token mixes (default: every skill).") var topK: Int?
        @Option(help: "Passes over the shots that train the routers.") var steps = 60
        @Option(help: "The routers' learning rate.") var lr: Float = 0.01
        @Option(help: "Other examples of the task (JSONL) to report the mounted adapter's and the base's loss on.") var eval: String?
        func validate() throws {
            guard (1...100_000).contains(steps) else { throw ValidationError("--steps must be in 1...100000") }
            guard lr.isFinite && lr > 0 else { throw ValidationError("--lr must be positive and finite") }
            if let k = topK, k < 1 { throw ValidationError("--top-k must be at least 1") }
        }
        func run() throws {
            let shots = choice.shots, out = choice.out
            // The held-out examples are read first: a bad file is refused before anything is written.
            let held = try eval.map { try SkillSelection.Scorer(base: shots.model, shots: $0, chatTemplate: shots.chatTemplate) }
            let c = try choice.choose(atLeast: 2)
            var options = SkillSelection.MountOptions()
            (options.topK, options.steps, options.lr) = (topK, steps, lr)
            let (before, _) = try choice.place {
                try SkillSelection.mount(c.adapters, weights: c.weights, base: shots.model, shots: c.scorer.examples, options: options,
                                         to: $0, pool: ThreadPool(threads: shots.threads ?? ThreadPool.defaultThreadCount))
            }
            struct Out: Encodable {
                var out: String; var weights: [String: Double]; var loss_before_routing: Double; var loss: Double; var base_loss: Double
                var eval_loss: Double?, eval_base_loss: Double?
            }
            try printJSON(Out(out: out, weights: Dictionary(uniqueKeysWithValues: zip(c.names, c.weights)), loss_before_routing: before,
                              loss: try c.scorer.loss(adapters: [out]), base_loss: try c.scorer.loss(adapters: []),
                              eval_loss: try held?.loss(adapters: [out]), eval_base_loss: try held?.loss(adapters: [])))
        }
    }

    struct Compose: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Merge skills in parameter space into one PEFT adapter: a weighted sum of their deltas, the weights given or searched on the K shots.")
        @OptionGroup var choice: ChoiceOptions
        func run() throws {
            let c = try choice.choose(atLeast: 1), out = choice.out
            try choice.place { try SkillSelection.compose(c.adapters, weights: c.weights, base: choice.shots.model, to: $0) }
            var single: [String: Double] = [:]
            for e in c.entries { single[e.name] = try c.scorer.loss(adapters: [c.lib.folder(of: e.name)]) }
            struct Out: Encodable { var out: String; var weights: [String: Double]; var loss: Double; var base_loss: Double; var single_losses: [String: Double] }
            try printJSON(Out(out: out, weights: Dictionary(uniqueKeysWithValues: zip(c.names, c.weights)),
                              loss: try c.scorer.loss(adapters: [out]), base_loss: try c.scorer.loss(adapters: []), single_losses: single))
        }
    }
}
