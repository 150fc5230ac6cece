import Foundation
import MoE
import MoECore
import MoEModels
import XCTest

/// Prefill of 9 tokens, then 4 decode steps: every logit of each step, as bits.
func stepLogitBits(_ model: DecoderModel) throws -> [[UInt32]] {
    var cache = model.makeCache()
    var steps = [try model.forward([1, 5, 9, 2, 7, 3, 8, 4, 6], cache: &cache).toFloats().map(\.bitPattern)]
    for token in [11, 3, 17, 2] { steps.append(try model.forward([token], cache: &cache).toFloats().map(\.bitPattern)) }
    return steps
}

/// The expert cache (issue 20): logits under any memory budget equal the resident model's bit
/// for bit; the budget is never exceeded; eviction follows the policy; concurrent readers are
/// safe; a file that shrinks gives a typed error naming it; a budget too small is refused.
final class ExpertCacheTests: XCTestCase {
    let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")

    func run(_ model: DecoderModel) throws -> [[UInt32]] { try stepLogitBits(model) }

    func testLogitsUnderEveryBudgetEqualTheResidentModel() throws {
        for name in ["gguf_models/qwen3_moe.q8_0.gguf", "mixtral", "deepseek_v3", "gpt_oss"] {
            let path = fixtures.appendingPathComponent(name).path
            let plain = try DecoderModel(path: path, pool: ThreadPool(threads: 2))
            let want = try run(plain)
            let resident = try plain.storedBytes() - plain.routedExpertBytes
            let expert = plain.largestExpertBytes
            // One expert, three, and all of them; with router lookahead on the last two.
            for extra in [expert, 3 * expert, plain.routedExpertBytes] {
                let model = try DecoderModel(path: path, pool: ThreadPool(threads: 2))
                let cache = try model.useExpertCache(budget: resident + extra, prefetch: extra != expert)
                XCTAssertEqual(try run(model), want, "\(name) with \(extra) bytes of experts")
                let stats = cache.statistics
                XCTAssertLessThanOrEqual(cache.bytesHeld, cache.capacity, name)
                XCTAssertGreaterThan(stats.misses, 0, name)
                XCTAssertGreaterThan(stats.bytesRead, 0, name)
                XCTAssertGreaterThan(stats.stallSeconds, 0, "\(name): the layers waited for their misses")
                if extra == plain.routedExpertBytes {
                    XCTAssertEqual(stats.evictions, 0, "\(name): everything fits")
                    XCTAssertGreaterThan(stats.prefetches, 0, "\(name): lookahead read ahead")
                    cache.resetStatistics()
                    _ = try run(model)
                    XCTAssertEqual(cache.statistics.misses, 0, "\(name): a second run is all hits")
                } else {
                    XCTAssertGreaterThan(stats.evictions, 0, "\(name) with \(extra) bytes")
                }
            }
        }
    }

    func testABudgetBelowTheResidentWeightsIsRefused() throws {
        let path = fixtures.appendingPathComponent("gguf_models/qwen3_moe.q8_0.gguf").path
        let model = try DecoderModel(path: path)
        XCTAssertThrowsError(try model.useExpertCache(budget: 1000)) { error in
            XCTAssertTrue("\(error)".contains("memory budget"), "\(error)")
            XCTAssertTrue("\(error)".contains("qwen3_moe.q8_0.gguf"), "\(error)")
        }
    }

    /// Weights of `bytes` bytes in a temporary file, as a mapped f32 tensor [bytes / 4].
    func mappedTensor(_ bytes: Int, fill: UInt8) throws -> (Tensor, String) {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-cache-\(UUID().uuidString)").path
        try Data(repeating: fill, count: bytes).write(to: URL(fileURLWithPath: path))
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        let file = try MappedFile(path: path)
        return (try Tensor(mapping: file, byteOffset: 0, shape: [bytes / 4], dtype: .f32), path)
    }

    func testEvictionFollowsThePolicy() throws {
        let (w, _) = try mappedTensor(1024, fill: 1)
        for policy in ExpertCache.Policy.allCases {
            let cache = ExpertCache(capacity: 3 * 1024, policy: policy)
            func use(_ e: Int) {
                XCTAssertNotNil(cache.acquire(layer: 0, expert: e, source: [w]))
                cache.release(layer: 0, expert: e)
            }
            // Expert 0 is used three times, 1 once, 2 twice; 1 is the oldest use after 0's first.
            for e in [0, 1, 2, 0, 2, 0] { use(e) }
            use(3)  // evicts 1 under both policies (least recent; least frequent)
            XCTAssertEqual(cache.count, 3)
            cache.resetStatistics()
            use(1)  // a miss: LRU evicts 2 (0 was used after it), LFU evicts 3 (one use)
            XCTAssertEqual(cache.statistics.misses, 1, "\(policy)")
            cache.resetStatistics()
            use(policy == .lru ? 3 : 2)
            XCTAssertEqual(cache.statistics.hits, 1, "\(policy): the survivor is still held")
            XCTAssertLessThanOrEqual(cache.bytesHeld, 3 * 1024)
        }
    }

    /// LFU counts layer passes that chose an expert: one read ahead (or read while the layer's
    /// other experts computed) and then used once counts once, as one read on a miss does.
    func testReadAheadsCountOneUseForLFU() throws {
        let (w, _) = try mappedTensor(1024, fill: 2)
        for demand in [false, true] {
            let cache = ExpertCache(capacity: 2 * 1024, policy: .lfu)
            cache.prefetch(layer: 0, expert: 1, source: [w], demand: demand)
            XCTAssertNotNil(cache.acquire(layer: 0, expert: 1, source: [w]))
            cache.release(layer: 0, expert: 1)
            XCTAssertNotNil(cache.acquire(layer: 0, expert: 0, source: [w]))  // a miss, used once, more recent
            cache.release(layer: 0, expert: 0)
            XCTAssertNotNil(cache.acquire(layer: 0, expert: 2, source: [w]))
            cache.release(layer: 0, expert: 2)
            XCTAssertEqual(cache.held(layer: 0, experts: 3), [true, false, true], "demand \(demand): equal uses, the older goes")
        }
    }

    /// Acquires and releases expert `e` of layer 0, which must succeed.
    func use(_ cache: ExpertCache, _ e: Int, _ w: Tensor) {
        XCTAssertNotNil(cache.acquire(layer: 0, expert: e, source: [w]))
        cache.release(layer: 0, expert: e)
    }

    /// LFU keeps an expert's count while it is out of the cache: a hot expert evicted once by
    /// a burst of others comes back ranked by its history, and the cold ones go instead.
    func testLFUKeepsCountsAcrossEvictions() throws {
        let (w, _) = try mappedTensor(1024, fill: 4)
        let cache = ExpertCache(capacity: 2 * 1024, policy: .lfu)
        let use = { (e: Int) in self.use(cache, e, w) }
        for _ in 0..<5 { use(0); use(1) }  // 0 and 1: five uses each
        use(2)  // evicts 0 (equal counts, older)
        use(3)  // evicts 2 (one use)
        XCTAssertEqual(cache.held(layer: 0, experts: 4), [false, true, false, true])
        use(0)  // back with its five uses (six now): evicts 3 (one use)
        use(2)  // two uses: evicts 1 (five), not 0 (six), which a count kept per entry would
                // have restarted at one and evicted here
        XCTAssertEqual(cache.held(layer: 0, experts: 4), [true, false, true, false])
    }

    /// LFU's counts halve as uses pass, so an expert hot only long ago loses its place to one
    /// hot now instead of holding it forever.
    func testLFUCountsAge() throws {
        let (w, _) = try mappedTensor(1024, fill: 5)
        let cache = ExpertCache(capacity: 2 * 1024, policy: .lfu)
        let use = { (e: Int) in self.use(cache, e, w) }
        for _ in 0..<40 { use(0) }  // 0: hot once
        for _ in 0..<200 { use(1); use(2) }  // then 1 and 2 alternate, never 0
        XCTAssertEqual(cache.held(layer: 0, experts: 3), [false, true, true], "0's old count decayed below 1's and 2's")
    }

    /// A read-ahead never evicts another not used yet (under LFU those rank lowest, so each
    /// would evict the one before it); the layer's own misses still may.
    func testReadAheadsDoNotEvictEachOther() throws {
        let (w, _) = try mappedTensor(1024, fill: 6)
        for policy in ExpertCache.Policy.allCases {
            let cache = ExpertCache(capacity: 2 * 1024, policy: policy)
            func readAhead(_ e: Int) {
                cache.prefetch(layer: 1, expert: e, source: [w], sparing: 0)
                let deadline = Date().addingTimeInterval(30)
                while cache.statistics.bytesRead < cache.count * 1024 {  // read done, unpinned
                    guard Date() < deadline else { return XCTFail("read-ahead of expert \(e) never finished") }
                    usleep(100)
                }
            }
            readAhead(1)
            readAhead(2)
            readAhead(3)  // no room without evicting 1 or 2: not read
            XCTAssertEqual(cache.held(layer: 1, experts: 4), [false, true, true, false], "\(policy)")
            for e in [1, 2] {
                XCTAssertNotNil(cache.acquire(layer: 1, expert: e, source: [w]))
                cache.release(layer: 1, expert: e)
            }
            XCTAssertEqual(cache.statistics.prefetchAccuracy, 1, "\(policy)")
            XCTAssertNotNil(cache.acquire(layer: 1, expert: 3, source: [w]), "a miss evicts a used read-ahead")
            cache.release(layer: 1, expert: 3)
        }
    }

    func testPinnedEntriesAreNotEvicted() throws {
        let (w, _) = try mappedTensor(1024, fill: 2)
        let cache = ExpertCache(capacity: 2 * 1024)
        XCTAssertNotNil(cache.acquire(layer: 0, expert: 0, source: [w]))
        XCTAssertNotNil(cache.acquire(layer: 0, expert: 1, source: [w]))
        XCTAssertNil(cache.acquire(layer: 0, expert: 2, source: [w]), "both held entries are pinned")
        XCTAssertNotNil(cache.takeFailure())
        cache.release(layer: 0, expert: 0)
        XCTAssertNotNil(cache.acquire(layer: 0, expert: 2, source: [w]))
        XCTAssertLessThanOrEqual(cache.bytesHeld, 2 * 1024)
    }

    func testConcurrentReadersStayWithinTheBudget() throws {
        let (w, _) = try mappedTensor(4096, fill: 3)
        let cache = ExpertCache(capacity: 5 * 4096)
        DispatchQueue.concurrentPerform(iterations: 8) { t in
            for i in 0..<200 {
                let e = (t * 7 + i * 3) % 12
                if let copy = cache.acquire(layer: t % 2, expert: e, source: [w]) {
                    XCTAssertEqual(copy.tensors[0].byteCount, 4096)
                    XCTAssertEqual(copy.tensors[0].rawPointer.load(fromByteOffset: 100, as: UInt8.self), 3)
                    cache.release(layer: t % 2, expert: e)
                }
                XCTAssertLessThanOrEqual(cache.bytesHeld, 5 * 4096)
            }
        }
        _ = cache.takeFailure()  // eight pinned at once may not fit five: a recorded failure, never an overrun
        XCTAssertLessThanOrEqual(cache.bytesHeld, 5 * 4096)
    }

    /// Direct I/O: whole 4 KiB blocks read into aligned pages, each copy a view at its offset
    /// (GGUF tensors sit at 32-byte alignment, safetensors at any): logits equal the resident
    /// model's on a budget of three experts and of all, and the budget counts the blocks.
    func testDirectReadsGiveTheSameLogits() throws {
        for name in ["gguf_models/qwen3_moe.q8_0.gguf", "mixtral"] {
            let path = fixtures.appendingPathComponent(name).path
            let plain = try DecoderModel(path: path, pool: ThreadPool(threads: 2))
            let want = try run(plain)
            let resident = try plain.storedBytes() - plain.routedExpertBytes
            for extra in [3 * plain.largestExpertBytes + 6 * 8192, plain.routedExpertBytes * 2] {
                let model = try DecoderModel(path: path, pool: ThreadPool(threads: 2))
                let cache = try model.useExpertCache(budget: resident + extra, directIO: true)
                XCTAssertEqual(try run(model), want, "\(name), \(extra) bytes of experts, direct")
                XCTAssertGreaterThan(cache.statistics.bytesRead, 0)
                XCTAssertLessThanOrEqual(cache.bytesHeld, cache.capacity)
            }
        }
    }

    /// A prefetch in flight is pinned until its read ends: an `acquire` that needs its room
    /// waits for the read and evicts it, rather than failing (seen once in a benchmark).
    func testAnAcquireWaitsForAPrefetchInFlight() throws {
        let (w, _) = try mappedTensor(1 << 20, fill: 6)
        for round in 0..<200 {
            let cache = ExpertCache(capacity: 2 << 20)
            cache.prefetch(layer: 1, expert: 0, source: [w])  // usually still reading below
            XCTAssertNotNil(cache.acquire(layer: 0, expert: 0, source: [w]), "round \(round)")
            XCTAssertNotNil(cache.acquire(layer: 0, expert: 1, source: [w]), "round \(round): waits for the prefetch, then evicts it")
            XCTAssertNil(cache.takeFailure(), "round \(round)")
            XCTAssertLessThanOrEqual(cache.bytesHeld, 2 << 20)
        }
    }

    /// Lookahead for layer l+1 runs before layer l pins its experts: its reads evict other
    /// layers' entries, never layer l's, and evict nothing when only layer l's could go.
    func testAPrefetchSparesTheLayerAboutToRun() throws {
        let (w, _) = try mappedTensor(4096, fill: 7)
        let cache = ExpertCache(capacity: 2 * 4096)
        func use(_ layer: Int, _ e: Int) {
            XCTAssertNotNil(cache.acquire(layer: layer, expert: e, source: [w]))
            cache.release(layer: layer, expert: e)
        }
        use(0, 0)  // the least recent entry
        use(1, 0)
        cache.prefetch(layer: 1, expert: 1, source: [w], sparing: 0)
        _ = cache.acquire(layer: 1, expert: 1, source: [w])  // waits for the read
        cache.release(layer: 1, expert: 1)
        cache.resetStatistics()
        use(0, 0)
        XCTAssertEqual(cache.statistics.hits, 1, "layer 0's entry survived the prefetch")
        // Now only layer 0's entries are evictable: a prefetch sparing layer 0 does nothing.
        let full = ExpertCache(capacity: 2 * 4096)
        for e in 0..<2 { XCTAssertNotNil(full.acquire(layer: 0, expert: e, source: [w])); full.release(layer: 0, expert: e) }
        full.prefetch(layer: 1, expert: 0, source: [w], sparing: 0)
        XCTAssertEqual(full.statistics.prefetches, 0)
        XCTAssertEqual(full.statistics.evictions, 0)
        XCTAssertEqual(full.count, 2)
    }

    func testAFileThatShrinksGivesATypedError() throws {
        let (w, path) = try mappedTensor(8192, fill: 4)
        let cache = ExpertCache(capacity: 1 << 20)
        XCTAssertEqual(truncate(path, 100), 0)
        XCTAssertNil(cache.acquire(layer: 2, expert: 5, source: [w]))
        let failure = try XCTUnwrap(cache.takeFailure())
        XCTAssertTrue("\(failure)".contains(path) && "\(failure)".contains("layer 2 expert 5") && "\(failure)".contains("ends early"),
                      "\(failure)")
        XCTAssertNil(cache.takeFailure(), "taking the failure clears it")
    }

    func testPrefetchedExpertsAreHitsAndNeverOverrunTheBudget() throws {
        let (w, _) = try mappedTensor(2048, fill: 5)
        let cache = ExpertCache(capacity: 3 * 2048)
        for e in 0..<3 { cache.prefetch(layer: 1, expert: e, source: [w]) }
        cache.prefetch(layer: 1, expert: 0, source: [w])  // already held or being read: nothing new
        for e in 0..<3 {
            let copy = try XCTUnwrap(cache.acquire(layer: 1, expert: e, source: [w]))  // waits for the read if needed
            XCTAssertEqual(copy.tensors[0].rawPointer.load(fromByteOffset: 2000, as: UInt8.self), 5)
        }
        var stats = cache.statistics
        XCTAssertEqual(stats.prefetches, 3)
        XCTAssertEqual(stats.prefetchHits, 3)
        XCTAssertEqual(stats.misses, 0)
        XCTAssertEqual(stats.prefetchAccuracy, 1)
        // All three pinned: a prefetch finds no room and does nothing.
        cache.prefetch(layer: 1, expert: 7, source: [w])
        stats = cache.statistics
        XCTAssertEqual(stats.prefetches, 3)
        XCTAssertLessThanOrEqual(cache.bytesHeld, 3 * 2048)
        for e in 0..<3 { cache.release(layer: 1, expert: e) }
        XCTAssertNil(cache.takeFailure(), "a skipped prefetch is not a failure")
    }

    /// A layer's experts not in the cache are read while the ones in it compute: the logits do
    /// not change, and each use is counted once, as a hit or (read then) a miss: with every
    /// expert fitting, the misses are the distinct experts the steps chose, and hits and misses
    /// add up to every use.
    func testMissesReadWhileHitsComputeCountOnce() throws {
        for name in ["gguf_models/qwen3_moe.q8_0.gguf", "mixtral"] {
            let path = fixtures.appendingPathComponent(name).path
            let plain = try DecoderModel(path: path, pool: ThreadPool(threads: 2))
            let want = try run(plain)
            let model = try DecoderModel(path: path, pool: ThreadPool(threads: 2))
            let cache = try model.useExpertCache(budget: try plain.storedBytes() + 1)
            var uses = 0, distinct = Set<[Int]>()
            var options = ForwardOptions()
            options.trace = { layer, routing in  // a layer's pass takes each chosen expert once
                let chosen = Set((0..<routing.tokenCount).flatMap { routing.experts(of: $0) })
                uses += chosen.count
                for e in chosen { distinct.insert([layer, e]) }
            }
            var kv = model.makeCache()
            var got = [try model.forward([1, 5, 9, 2, 7, 3, 8, 4, 6], cache: &kv, options: options).toFloats().map(\.bitPattern)]
            for token in [11, 3, 17, 2] { got.append(try model.forward([token], cache: &kv, options: options).toFloats().map(\.bitPattern)) }
            XCTAssertEqual(got, want, name)
            let stats = cache.statistics
            XCTAssertEqual(stats.misses, distinct.count, name)
            XCTAssertEqual(stats.evictions, 0, name)
            XCTAssertEqual(stats.prefetches, 0, "\(name): reads of chosen experts are not read-aheads")
            XCTAssertGreaterThan(stats.hits, 0, name)
            XCTAssertEqual(stats.hits + stats.misses, uses, name)
        }
    }

    /// Each read fills the buffers its own eviction freed, even while other reads finish (which
    /// dropped spare buffers beyond the budget, often a read's before it took them: fresh pages
    /// the kernel zeroes, a third of decode's CPU time under a 12 GB budget).
    func testReadsReuseTheBuffersTheirEvictionsFreed() throws {
        let (w, _) = try mappedTensor(1 << 20, fill: 3)
        let cache = ExpertCache(capacity: 2 << 20)
        for round in 0..<50 {
            let pair = [2 * round, 2 * round + 1]
            for e in pair { cache.prefetch(layer: 0, expert: e, source: [w]) }
            for e in pair {
                let copy = try XCTUnwrap(cache.acquire(layer: 0, expert: e, source: [w]), "round \(round)")
                XCTAssertEqual(copy.tensors[0].rawPointer.load(fromByteOffset: 12345, as: UInt8.self), 3)
            }
            for e in pair { cache.release(layer: 0, expert: e) }
        }
        let stats = cache.statistics
        XCTAssertEqual(stats.prefetches, 100)
        XCTAssertEqual(stats.evictions, 98)
        XCTAssertEqual(stats.buffersMapped, 2, "only the first two reads map pages")
        XCTAssertLessThanOrEqual(cache.bytesHeld, 2 << 20)
    }

    func testAFailedPrefetchIsReadAgainByItsUser() throws {
        let (w, path) = try mappedTensor(4096, fill: 6)
        let cache = ExpertCache(capacity: 1 << 20)
        XCTAssertEqual(truncate(path, 10), 0)
        cache.prefetch(layer: 0, expert: 1, source: [w])
        XCTAssertNil(cache.acquire(layer: 0, expert: 1, source: [w]))
        XCTAssertTrue("\(try XCTUnwrap(cache.takeFailure()))".contains("ends early"))
        XCTAssertEqual(cache.bytesHeld, 0)
    }

    /// A random f32 Mixtral-layout checkpoint (hidden 64, 8 experts of 64, top-2), removed
    /// after the test.
    func randomMixtral(layers: Int, seed: UInt64) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-random-\(UUID().uuidString)").path
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        var shape = RandomCheckpoint.Shape()
        (shape.hiddenSize, shape.layers, shape.heads, shape.kvHeads, shape.experts, shape.topK, shape.expertSize) = (64, layers, 4, 2, 8, 2, 64)
        try RandomCheckpoint.write(arch: "mixtral", shape: shape, to: path, seed: seed, dtype: .f32)
        return path
    }

    /// Cache-aware routing: with margin 0 it changes nothing; on a budget of half the experts a
    /// large margin turns decode misses into hits, and the logits move (what `moe
    /// perplexity` measures). A random Mixtral-layout model (the fixture's routers are scaled so
    /// that no choice is near a tie).
    func testCacheAwareRoutingPrefersCachedExperts() throws {
        let path = try randomMixtral(layers: 3, seed: 3)
        let plain = try DecoderModel(path: path, pool: ThreadPool(threads: 2))
        let want = try run(plain)
        let resident = try plain.storedBytes() - plain.routedExpertBytes
        var hits: [Float: Double] = [:], logits: [Float: [[UInt32]]] = [:]
        for margin: Float in [0, 10] {
            let model = try DecoderModel(path: path, pool: ThreadPool(threads: 2))
            let cache = try model.useExpertCache(budget: resident + plain.routedExpertBytes / 2, cacheAwareMargin: margin)
            logits[margin] = try run(model)
            // 32 decode steps after a prefill: their hit rate.
            var kv = model.makeCache()
            _ = try model.forward([4, 8, 15, 16, 23, 42], cache: &kv)
            cache.resetStatistics()
            for step in 0..<32 { _ = try model.forward([(step * 37 + 11) % 256], cache: &kv) }
            hits[margin] = cache.statistics.hitRate
        }
        XCTAssertEqual(logits[0], want)
        XCTAssertTrue(logits[10] != want, "a margin of 10 changes the routing")
        XCTAssertGreaterThan(hits[10]!, hits[0]!, "\(hits)")
        XCTAssertGreaterThanOrEqual(hits[10]!, 0.99, "\(hits): an 11-fold boost keeps decode on cached experts")
        XCTAssertThrowsError(try plain.useExpertCache(budget: resident + plain.routedExpertBytes, cacheAwareMargin: -1))
    }

    /// Lookahead on a budget of a quarter of the experts: prefetches in flight (pinned until
    /// read) must make a layer's own reads wait for them, not fail for want of room; the logits
    /// stay the resident model's over a prefill and 48 decode steps.
    func testPrefetchesInFlightNeverStarveALayer() throws {
        let path = try randomMixtral(layers: 4, seed: 5)
        func decode(_ model: DecoderModel) throws -> [[UInt32]] {
            var kv = model.makeCache()
            var out = [try model.forward([4, 8, 15, 16, 23, 42, 7, 9], cache: &kv).toFloats().map(\.bitPattern)]
            for step in 0..<48 { out.append(try model.forward([(step * 37 + 11) % 256], cache: &kv).toFloats().map(\.bitPattern)) }
            return out
        }
        let plain = try DecoderModel(path: path, pool: ThreadPool(threads: 2))
        let want = try decode(plain)
        let resident = try plain.storedBytes() - plain.routedExpertBytes
        for budget in [plain.routedExpertBytes / 4, 3 * plain.largestExpertBytes] {
            let model = try DecoderModel(path: path, pool: ThreadPool(threads: 2))
            let cache = try model.useExpertCache(budget: resident + budget, prefetch: true)
            XCTAssertEqual(try decode(model), want, "\(budget) bytes of experts")
            if budget == plain.routedExpertBytes / 4 { XCTAssertGreaterThan(cache.statistics.prefetches, 0) }
            XCTAssertLessThanOrEqual(cache.bytesHeld, cache.capacity)
        }
    }
}
