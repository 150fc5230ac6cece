import Foundation
import MoECore

/// A `Communicator` whose ranks are threads of one process: every collective posts each rank's
/// buffers, waits for all ranks, copies what it is owed straight from the others' buffers, and
/// waits again (so no buffer is read after its owner returns). It is the reference the MPI
/// implementation is tested against, and what runs expert parallelism without MPI.
public final class ThreadCommunicator: Communicator, @unchecked Sendable {
    public let rank: Int
    public var size: Int { group.size }
    private let group: Group

    private init(rank: Int, group: Group) {
        self.rank = rank
        self.group = group
    }

    /// Runs `body` on `ranks` threads, one communicator each, and returns each rank's result in
    /// rank order once all have finished. A rank that waits more than `timeout` seconds in a
    /// collective for the others (one skipped a collective: a bug) stops the process with a
    /// message, rather than hanging it.
    public static func run<T: Sendable>(ranks: Int, timeout: Double = 120,
                                        _ body: @escaping @Sendable (ThreadCommunicator) -> T) -> [T] {
        precondition(ranks >= 1, "ThreadCommunicator.run: \(ranks) ranks")
        let group = Group(size: ranks, timeout: timeout)
        let results = Results<T>(count: ranks)
        let done = DispatchGroup()
        for r in 0..<ranks {
            done.enter()
            let thread = Thread {
                results.set(r, body(ThreadCommunicator(rank: r, group: group)))
                done.leave()
            }
            thread.stackSize = 8 << 20
            thread.start()
        }
        done.wait()
        return results.values()
    }

    public func allToAllV(send: UnsafeBufferPointer<Float>, sendCounts: [Int],
                          receive: UnsafeMutableBufferPointer<Float>, receiveCounts: [Int]) {
        precondition(sendCounts.count == size && receiveCounts.count == size, "allToAllV: counts for \(size) ranks")
        let (receiveOffsets, total) = MessageCounts.offsets(receiveCounts)
        precondition(total <= receive.count, "allToAllV: \(total) values into \(receive.count)")
        exchange(Post(pointer: UnsafeRawPointer(send.baseAddress), counts: sendCounts)) { posts in
            for (q, post) in posts.enumerated() {
                let (offsets, _) = MessageCounts.offsets(post.counts)
                precondition(post.counts[rank] == receiveCounts[q], "allToAllV: rank \(q) sends \(post.counts[rank]), rank \(rank) expects \(receiveCounts[q])")
                guard receiveCounts[q] > 0, let from = post.pointer?.assumingMemoryBound(to: Float.self) else { continue }
                (receive.baseAddress! + receiveOffsets[q]).update(from: from + offsets[rank], count: receiveCounts[q])
            }
        }
    }

    public func allGather(_ values: [Int64]) -> [Int64] {
        var out: [Int64] = []
        values.withUnsafeBufferPointer { mine in
            exchange(Post(pointer: UnsafeRawPointer(mine.baseAddress), counts: [mine.count])) { posts in
                for post in posts {
                    precondition(post.counts[0] == values.count, "allGather: ranks give different counts")
                    if let p = post.pointer?.assumingMemoryBound(to: Int64.self) { out += UnsafeBufferPointer(start: p, count: post.counts[0]) }
                }
            }
        }
        return out
    }

    public func allGatherV(send: UnsafeBufferPointer<Float>, receive: UnsafeMutableBufferPointer<Float>, counts: [Int]) {
        precondition(counts.count == size && counts[rank] == send.count, "allGatherV: counts \(counts), sending \(send.count)")
        let (offsets, total) = MessageCounts.offsets(counts)
        precondition(total <= receive.count, "allGatherV: \(total) values into \(receive.count)")
        exchange(Post(pointer: UnsafeRawPointer(send.baseAddress), counts: [send.count])) { posts in
            for (q, post) in posts.enumerated() {
                precondition(post.counts[0] == counts[q], "allGatherV: rank \(q) sends \(post.counts[0]), expected \(counts[q])")
                guard counts[q] > 0, let from = post.pointer?.assumingMemoryBound(to: Float.self) else { continue }
                (receive.baseAddress! + offsets[q]).update(from: from, count: counts[q])
            }
        }
    }

    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Float>) { reduce(values) }
    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Double>) { reduce(values) }

    public func barrier() { group.wait(rank) }

    /// Every rank's sum, added in rank order (the same bits on every rank).
    private func reduce<F: BinaryFloatingPoint>(_ values: UnsafeMutableBufferPointer<F>) {
        var sum = [F](repeating: 0, count: values.count)
        exchange(Post(pointer: UnsafeRawPointer(values.baseAddress), counts: [values.count])) { posts in
            for post in posts {
                precondition(post.counts[0] == values.count, "allReduceSum: ranks give different counts")
                guard let p = post.pointer?.assumingMemoryBound(to: F.self) else { continue }
                for i in 0..<values.count { sum[i] += p[i] }
            }
        }
        for i in 0..<values.count { values[i] = sum[i] }
    }

    /// Posts this rank's buffer, runs `read` over every rank's post once all have posted, and
    /// returns once all have read.
    private func exchange(_ mine: Post, read: ([Post]) -> Void) {
        group.post(rank, mine)
        group.wait(rank)
        read(group.posts())
        group.wait(rank)
    }

    /// One rank's contribution to a collective: where its values are and how many.
    struct Post: @unchecked Sendable {
        var pointer: UnsafeRawPointer?
        var counts: [Int]
    }

    /// The state the ranks share: the posts of the collective in progress and a reusable barrier.
    final class Group: @unchecked Sendable {
        let size: Int
        let timeout: Double
        private let condition = NSCondition()
        private var slots: [Post]
        private var arrived = 0, generation = 0

        init(size: Int, timeout: Double) {
            self.size = size
            self.timeout = timeout
            slots = Array(repeating: Post(pointer: nil, counts: []), count: size)
        }

        func post(_ rank: Int, _ post: Post) {
            condition.lock()
            slots[rank] = post
            condition.unlock()
        }

        func posts() -> [Post] {
            condition.lock()
            defer { condition.unlock() }
            return slots
        }

        /// Blocks until all `size` ranks have called it (then it is ready for the next round).
        func wait(_ rank: Int) {
            condition.lock()
            defer { condition.unlock() }
            let mine = generation
            arrived += 1
            if arrived == size {
                arrived = 0
                generation += 1
                condition.broadcast()
            } else {
                let deadline = Date(timeIntervalSinceNow: timeout)
                while generation == mine {
                    if !condition.wait(until: deadline) && generation == mine {
                        // No input reaches this; every rank runs the same code, so only a rank that
                        // skipped a collective (a bug in the caller) leaves the others here, and
                        // stopping with the rank named beats hanging the process forever.
                        fatalError("ThreadCommunicator: rank \(rank) waited \(timeout) s in a collective the other ranks did not join")  // safe: caller bug only, see above
                    }
                }
            }
        }
    }

    /// One value per rank, set from the ranks' threads (each rank's result; a test's side
    /// channel).
    public final class Results<T>: @unchecked Sendable {
        private let lock = NSLock()
        private var slots: [T?]
        public init(count: Int) { slots = Array(repeating: nil, count: count) }
        public func set(_ i: Int, _ value: T) { lock.withLock { slots[i] = value } }
        /// Every rank's value, in rank order (all must have been set).
        public func values() -> [T] { lock.withLock { slots.map { $0! } } }
    }
}
