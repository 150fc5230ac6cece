import MoECore

/// The built-in synthetic multi-task corpus: tasks of graded difficulty, every sample tagged
/// with its task, a held-out split that never overlaps training, and exact-match accuracy.
///
/// A sample is a prompt and the answer the model must produce after it, e.g. `37+48=` -> `85`.
/// Difficulty grows with `level` (1...): longer strings, more digits.
public enum SyntheticTask: String, CaseIterable, Codable, Sendable {
    /// `copy:xk3=` -> `xk3`.
    case copy
    /// `rev:xk3=` -> `3kx`.
    case reverse
    /// `sort:3141=` -> `1134`.
    case sortDigits = "sort"
    /// `37+48=` -> `85`.
    case addition
    /// `12*34=` -> `408`.
    case multiplication
    /// `the cow says` -> ` moo.`: templated English whose ending is fixed by its subject.
    case english

    /// One sample.
    public struct Sample: Sendable, Equatable {
        public var task: SyntheticTask
        public var prompt: String
        public var answer: String
        /// The text a model trains on: prompt, answer and a newline that ends it.
        public var text: String { prompt + answer + "\n" }
    }

    static let animals: [(String, String)] = [("cow", "moo"), ("dog", "woof"), ("cat", "meow"), ("duck", "quack"),
                                              ("sheep", "baa"), ("owl", "hoot"), ("lion", "roar"), ("snake", "hiss"),
                                              ("mouse", "squeak"), ("horse", "neigh"), ("frog", "croak"), ("bee", "buzz")]
    static let adjectives = ["small", "old", "happy", "quiet", "brown", "young", "big", "lazy"]
    static let letters = Array("abcdefghijklmnopqrstuvwxyz0123456789")

    /// A sample of this task at `level` (1 = easiest) from `rng`.
    public func sample(level: Int, rng: inout SplitMix64) -> Sample {
        func number(digits: Int) -> Int {
            let lo: Int = digits == 1 ? 0 : Self.powerOfTen(digits - 1)
            let hi: Int = Self.powerOfTen(digits) - 1
            return lo + Int(rng.next() % UInt64(hi - lo + 1))
        }
        func string(_ n: Int) -> String { String((0..<n).map { _ in Self.letters[Int(rng.next() % UInt64(Self.letters.count))] }) }
        let level = max(1, level)
        switch self {
        case .copy:
            let s = string(1 + Int(rng.next() % UInt64(2 * level + 2)))
            return Sample(task: self, prompt: "copy:\(s)=", answer: s)
        case .reverse:
            let s = string(1 + Int(rng.next() % UInt64(2 * level + 2)))
            return Sample(task: self, prompt: "rev:\(s)=", answer: String(s.reversed()))
        case .sortDigits:
            let n = 1 + Int(rng.next() % UInt64(2 * level + 2))
            let digits = (0..<n).map { _ in Character(String(rng.next() % 10)) }
            return Sample(task: self, prompt: "sort:\(String(digits))=", answer: String(digits.sorted()))
        case .addition:
            let (a, b) = (number(digits: 1 + Int(rng.next() % UInt64(level + 1))), number(digits: 1 + Int(rng.next() % UInt64(level + 1))))
            return Sample(task: self, prompt: "\(a)+\(b)=", answer: "\(a + b)")
        case .multiplication:
            let (a, b) = (number(digits: 1 + Int(rng.next() % UInt64(level))), number(digits: 1 + Int(rng.next() % 2)))
            return Sample(task: self, prompt: "\(a)*\(b)=", answer: "\(a * b)")
        case .english:
            let (animal, sound) = Self.animals[Int(rng.next() % UInt64(Self.animals.count))]
            let adjective = level > 1 && rng.next() % 2 == 0 ? Self.adjectives[Int(rng.next() % UInt64(Self.adjectives.count))] + " " : ""
            return Sample(task: self, prompt: "the \(adjective)\(animal) says", answer: " \(sound).")
        }
    }

    static func powerOfTen(_ n: Int) -> Int {
        var r = 1
        for _ in 0..<n { r *= 10 }
        return r
    }
}

/// An endless, seeded stream of samples from chosen tasks, split into training and held-out
/// by a hash of the prompt (so no prompt is ever in both).
public struct SyntheticCorpus: Sendable {
    public var tasks: [SyntheticTask]
    public var level: Int
    /// Share of prompts held out for evaluation.
    public var heldOutFraction: Double

    public init(tasks: [SyntheticTask] = SyntheticTask.allCases, level: Int = 2, heldOutFraction: Double = 0.1) {
        self.tasks = tasks
        self.level = level
        self.heldOutFraction = heldOutFraction
    }

    /// Whether `prompt` belongs to the held-out split (FNV-1a hash of its bytes).
    public func isHeldOut(_ prompt: String) -> Bool {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in prompt.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return Double(h % 10_000) < heldOutFraction * 10_000
    }

    /// A sample of `task` whose prompt is in the split, or nil if 2000 draws found none (a
    /// tiny prompt space that lies wholly on the other side).
    func sample(of task: SyntheticTask, heldOut: Bool, rng: inout SplitMix64) -> SyntheticTask.Sample? {
        for _ in 0..<2000 {
            let s = task.sample(level: level, rng: &rng)
            if isHeldOut(s.prompt) == heldOut { return s }
        }
        return nil
    }

    /// One sample of the split from a task drawn uniformly at random: the training stream.
    /// Returns nil only if no task has a prompt in the split.
    public func randomSample(heldOut: Bool, rng: inout SplitMix64) -> SyntheticTask.Sample? {
        var active = tasks
        while !active.isEmpty {
            let task = active[Int(rng.next() % UInt64(active.count))]
            if let s = sample(of: task, heldOut: heldOut, rng: &rng) { return s }
            active.removeAll { $0 == task }
        }
        return nil
    }

    /// `count` samples of the split, drawn from `seed` (tasks in turn, so each is represented).
    /// A task whose prompts never fall in the split (a tiny prompt space) drops out of the rotation.
    public func samples(_ count: Int, heldOut: Bool, seed: UInt64) -> [SyntheticTask.Sample] {
        var rng = SplitMix64(seed: seed)
        var out: [SyntheticTask.Sample] = []
        var active = tasks
        var turn = 0
        while out.count < count && !active.isEmpty {
            let task = active[turn % active.count]
            if let found = sample(of: task, heldOut: heldOut, rng: &rng) {
                out.append(found)
                turn += 1
            } else {
                active.removeAll { $0 == task }
            }
        }
        return out
    }
}

/// Exact-match accuracy per task: `predict` gets each prompt and returns the model's answer.
public func exactMatchAccuracy(_ samples: [SyntheticTask.Sample], predict: (String) throws -> String) rethrows -> [SyntheticTask: Double] {
    var right: [SyntheticTask: Int] = [:], total: [SyntheticTask: Int] = [:]
    for s in samples {
        total[s.task, default: 0] += 1
        if try predict(s.prompt) == s.answer { right[s.task, default: 0] += 1 }
    }
    var accuracy: [SyntheticTask: Double] = [:]
    for (task, n) in total { accuracy[task] = Double(right[task] ?? 0) / Double(n) }
    return accuracy
}
