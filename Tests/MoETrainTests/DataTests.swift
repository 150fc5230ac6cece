import Foundation
import MoECore
import MoETrain
import XCTest

final class DataTests: XCTestCase {
    func testByteTokenizerRoundTrips() {
        let tok = ByteTokenizer()
        for text in ["", "37+48=85\n", "héllo 世界 😀", "tabs\tand\nlines"] {
            XCTAssertEqual(tok.decode(tok.encode(text, bos: true)), text)
        }
        XCTAssertEqual(tok.encode("a", bos: true), [ByteTokenizer.bos, 97])
        XCTAssertEqual(ByteTokenizer.vocabularySize, 259)
    }

    /// The training stream draws every task, about equally often (a stream stuck on one task
    /// once trained a model that only copied).
    func testTrainingStreamMixesEveryTask() throws {
        let corpus = SyntheticCorpus()
        var rng = SplitMix64(seed: 7)
        var counts: [SyntheticTask: Int] = [:]
        for _ in 0..<1200 { counts[try XCTUnwrap(corpus.randomSample(heldOut: false, rng: &rng)).task, default: 0] += 1 }
        for task in SyntheticTask.allCases { XCTAssertTrue((150...250).contains(counts[task] ?? 0), "\(task): \(counts[task] ?? 0)") }
        var config = TrainingConfig()
        config.model = .init()
        config.batch = 4
        let trainer = try Trainer(config: config, pool: ThreadPool(threads: 1))
        let text = trainer.batch(at: 0).inputs.map { ByteTokenizer().decode($0) }.joined()
        for marker in ["copy:", "rev:", "sort:", "+", "*", " says "] { XCTAssertTrue(text.contains(marker), "\(marker) in \(text)") }
        XCTAssertNotEqual(trainer.batch(at: 0).inputs, trainer.batch(at: 1).inputs)
        XCTAssertEqual(trainer.batch(at: 3).inputs, trainer.batch(at: 3).inputs, "a step's batch is reproducible, for resume")
    }

    /// Every task's answer is what the task says, checked by recomputing it independently.
    func testTasksAnswerCorrectly() {
        var rng = SplitMix64(seed: 1)
        for level in 1...3 {
            for _ in 0..<50 {
                for task in SyntheticTask.allCases {
                    let s = task.sample(level: level, rng: &rng)
                    switch task {
                    case .copy:
                        XCTAssertEqual(s.prompt, "copy:\(s.answer)=")
                    case .reverse:
                        XCTAssertEqual(s.prompt, "rev:\(String(s.answer.reversed()))=")
                    case .sortDigits:
                        let digits = s.prompt.dropFirst(5).dropLast()
                        XCTAssertEqual(s.answer, String(digits.sorted()))
                    case .addition:
                        let parts = s.prompt.dropLast().split(separator: "+").compactMap { Int($0) }
                        XCTAssertEqual(Int(s.answer), parts[0] + parts[1])
                    case .multiplication:
                        let parts = s.prompt.dropLast().split(separator: "*").compactMap { Int($0) }
                        XCTAssertEqual(Int(s.answer), parts[0] * parts[1])
                    case .english:
                        XCTAssertTrue(s.prompt.hasPrefix("the ") && s.prompt.hasSuffix(" says") && s.answer.hasSuffix("."))
                    }
                    XCTAssertTrue(s.text.hasSuffix("\n"))
                }
            }
        }
        // Harder levels give longer operands.
        var r1 = SplitMix64(seed: 2), r3 = SplitMix64(seed: 2)
        let easy = (0..<200).map { _ in SyntheticTask.addition.sample(level: 1, rng: &r1).prompt.count }.max() ?? 0
        let hard = (0..<200).map { _ in SyntheticTask.addition.sample(level: 3, rng: &r3).prompt.count }.max() ?? 0
        XCTAssertGreaterThan(hard, easy)
    }

    func testHeldOutSplitNeverOverlapsAndIsReproducible() {
        let corpus = SyntheticCorpus(level: 2, heldOutFraction: 0.2)
        let train = corpus.samples(600, heldOut: false, seed: 3), test = corpus.samples(120, heldOut: true, seed: 4)
        XCTAssertEqual(train.count, 600)
        XCTAssertEqual(test.count, 120)
        XCTAssertTrue(Set(train.map(\.prompt)).isDisjoint(with: Set(test.map(\.prompt))))
        XCTAssertEqual(corpus.samples(50, heldOut: false, seed: 3), Array(train.prefix(50)))
        XCTAssertEqual(Set(test.map(\.task)), Set(SyntheticTask.allCases), "every task is in the held-out split")
    }

    func testExactMatchAccuracyPerTask() {
        let samples = SyntheticCorpus().samples(60, heldOut: true, seed: 5)
        let perfect = exactMatchAccuracy(samples) { prompt in samples.first { $0.prompt == prompt }?.answer ?? "" }
        XCTAssertEqual(Set(perfect.values), [1])
        let none = exactMatchAccuracy(samples) { _ in "?" }
        XCTAssertEqual(Set(none.values), [0])
    }

    func testTextCorpusWindowsAreSeededAndCoverEveryFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-text-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let a = dir.appendingPathComponent("a.txt"), b = dir.appendingPathComponent("b.txt")
        try Data(String(repeating: "alpha beta gamma ", count: 50).utf8).write(to: a)
        try Data("xyz".utf8).write(to: b)
        let corpus = try TextCorpus(paths: [a.path, b.path])
        var r1 = SplitMix64(seed: 9), r2 = SplitMix64(seed: 9)
        let x = corpus.batch(8, length: 16, rng: &r1), y = corpus.batch(8, length: 16, rng: &r2)
        XCTAssertEqual(x.inputs, y.inputs)
        for (inp, tgt) in zip(x.inputs, x.targets) {
            XCTAssertEqual(inp.count, 16)
            XCTAssertEqual(Array(inp.dropFirst()), Array(tgt.dropLast()), "targets are the inputs shifted by one")
        }
        XCTAssertThrowsError(try TextCorpus(paths: [dir.appendingPathComponent("missing.txt").path]))
        let empty = dir.appendingPathComponent("empty.txt")
        try Data().write(to: empty)
        XCTAssertThrowsError(try TextCorpus(paths: [empty.path]))
    }
}
