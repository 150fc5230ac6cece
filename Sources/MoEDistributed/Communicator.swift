import Dispatch
import MoECore
#if MPI
import CMPI
#endif

/// The collective operations expert and data parallelism run on: a group of `size` ranks, each
/// calling the same collectives in the same order (as MPI requires).
///
/// Two implementations: `MPICommunicator` (processes, on one machine or many, with the package's
/// `MPI` trait) and `ThreadCommunicator` (ranks as threads of one process: the tests, and any
/// build without MPI). Counts are in elements, in rank order. A failed collective is not
/// recoverable (a peer is gone): MPI's ends the whole job with a message naming the call.
///
/// ```swift
/// let sums = ThreadCommunicator.run(ranks: 2) { comm in
///     var x: [Float] = [Float(comm.rank + 1)]
///     x.withUnsafeMutableBufferPointer { comm.allReduceSum($0) }
///     return x[0]                                   // 3 on both ranks
/// }
/// ```
public protocol Communicator: AnyObject, Sendable {
    /// This rank, in `0 ..< size`.
    var rank: Int { get }
    /// Ranks in the group.
    var size: Int { get }
    /// All-to-all with ragged counts (`MPI_Alltoallv`): `send` holds `sendCounts[q]` values for
    /// each rank q, in rank order; `receive` gets `receiveCounts[q]` values from each rank q, in
    /// rank order. Each rank's `receiveCounts[q]` must equal rank q's `sendCounts[rank]`
    /// (exchange the counts first, with `allGather`).
    func allToAllV(send: UnsafeBufferPointer<Float>, sendCounts: [Int],
                   receive: UnsafeMutableBufferPointer<Float>, receiveCounts: [Int])
    /// Starts `allToAllV` and returns at once (`MPI_Ialltoallv`), so that computation can run
    /// while the rows travel; `wait()` on the result before reading `receive` or reusing
    /// `send`, and keep both alive until then. Ranks must start collectives in the same order,
    /// blocking or not. An implementation may finish the exchange before it returns (the
    /// threads' one does: its ranks share memory, there is nothing to overlap).
    func startAllToAllV(send: UnsafeBufferPointer<Float>, sendCounts: [Int],
                        receive: UnsafeMutableBufferPointer<Float>, receiveCounts: [Int]) -> any PendingCollective
    /// Every rank's `values` (the same count on every rank), concatenated in rank order.
    func allGather(_ values: [Int64]) -> [Int64]
    /// Every rank's `send`, concatenated in rank order into `receive` (`counts[q]` values from
    /// rank q; `counts[rank]` must be `send.count`).
    func allGatherV(send: UnsafeBufferPointer<Float>, receive: UnsafeMutableBufferPointer<Float>, counts: [Int])
    /// Replaces `values` on every rank by their sum over the ranks, added in rank order.
    func allReduceSum(_ values: UnsafeMutableBufferPointer<Float>)
    /// Replaces `values` on every rank by their sum over the ranks, added in rank order.
    func allReduceSum(_ values: UnsafeMutableBufferPointer<Double>)
    /// Returns when every rank has called it.
    func barrier()
}

/// A collective in flight (see `Communicator.startAllToAllV`).
public protocol PendingCollective: AnyObject {
    /// Returns once this rank's part of the collective is done: its receive buffer is filled
    /// and its send buffer free.
    func wait()
    /// Whether it is done, without waiting; calling it also lets MPI move the data along.
    func test() -> Bool
    /// When it was first seen done (`DispatchTime` nanoseconds), or nil while in flight.
    var finishedAt: UInt64? { get }
}

/// A collective that was finished when it was started.
public final class FinishedCollective: PendingCollective {
    public let finishedAt: UInt64?
    public init() { finishedAt = DispatchTime.now().uptimeNanoseconds }
    public func wait() {}
    public func test() -> Bool { true }
}

extension Communicator {
    /// The blocking exchange, finished before it returns.
    public func startAllToAllV(send: UnsafeBufferPointer<Float>, sendCounts: [Int],
                               receive: UnsafeMutableBufferPointer<Float>, receiveCounts: [Int]) -> any PendingCollective {
        allToAllV(send: send, sendCounts: sendCounts, receive: receive, receiveCounts: receiveCounts)
        return FinishedCollective()
    }

    /// The sum of one value over the ranks.
    public func sum(_ value: Double) -> Double {
        var v = [value]
        v.withUnsafeMutableBufferPointer { allReduceSum($0) }
        return v[0]
    }

    /// Every rank's value of one integer, in rank order.
    public func allGather(_ value: Int) -> [Int] { allGather([Int64(value)]).map { Int($0) } }
}

/// Counts and offsets that an all-to-all or an all-gather can carry: MPI takes `int` counts
/// and displacements, so a message of 2^31 elements or more is refused before it is sent.
enum MessageCounts {
    /// Prefix sums of `counts` (the displacement of each rank's part) and their total.
    static func offsets(_ counts: [Int]) -> (offsets: [Int], total: Int) {
        var offsets = [Int](repeating: 0, count: counts.count), total = 0
        for (q, c) in counts.enumerated() {
            precondition(c >= 0, "negative message count \(c)")
            offsets[q] = total
            total += c
        }
        return (offsets, total)
    }
}

/// The MPI job this process may be a rank of.
public enum MPIJob {
    /// Whether this process is one of several MPI ranks (MPI initialised, not finalised, more
    /// than one rank); false in a build without MPI.
    public static var isShared: Bool {
        #if MPI
        return MPICommunicator.sharedWorld
        #else
        return false
        #endif
    }

    /// Ends the whole job with `code` (`MPI_Abort`) when `isShared`: a rank that fails on its
    /// own (a checkpoint it cannot write) must not leave the others waiting in a collective,
    /// nor wait for them in `MPI_Finalize`. Otherwise it returns.
    public static func abortIfShared(code: Int32) {
        #if MPI
        if MPICommunicator.sharedWorld { MPI_Abort(cmpi_comm_world(), code) }
        #endif
    }
}
