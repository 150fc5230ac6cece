#if MPI
import CMPI
import Foundation
import MoECore

/// A `Communicator` over MPI's `MPI_COMM_WORLD`: the processes `mpirun` started, on one
/// machine or many. Built only with the package's `MPI` trait (`swift build --traits MPI`).
///
/// MPI is initialised once per process with `MPI_THREAD_SERIALIZED` (collectives may come
/// from any thread, one at a time) and finalised at exit. Errors return to the caller
/// (`MPI_ERRORS_RETURN`), which prints the call, this rank and MPI's message to stderr and
/// ends the whole job with `MPI_Abort`: a rank that dies takes the others down with a message,
/// never a hang.
///
/// Non-blocking exchanges (`startAllToAllV`, `MPI_Ialltoallv`) are moved along while the
/// caller computes by a progress thread that tests them every 50 µs (Open MPI moves a
/// non-blocking collective's data only inside MPI calls); every MPI call goes through one
/// lock, as `MPI_THREAD_SERIALIZED` requires.
public final class MPICommunicator: Communicator, @unchecked Sendable {
    public let rank: Int
    public let size: Int
    private let comm: MPI_Comm
    /// Held around every MPI call.
    fileprivate let mpi = NSLock()
    /// Tests pending non-blocking exchanges from its own thread; nil when MPI does not allow
    /// calls from more than one thread (then they move only when this rank waits for them).
    private let progress: MPIProgress?

    /// The world communicator, initialising MPI on first use.
    public static let world = MPICommunicator()

    private init() {
        var provided: Int32 = 0
        var initialized: Int32 = 0
        MPI_Initialized(&initialized)
        if initialized == 0 {
            let code = MPI_Init_thread(nil, nil, cmpi_thread_serialized(), &provided)
            if code != cmpi_success() {
                FileHandle.standardError.write(Data("moe: MPI_Init_thread failed (\(code))\n".utf8))
                exit(1)
            }
            atexit { var finalized: Int32 = 0; MPI_Finalized(&finalized); if finalized == 0 { MPI_Finalize() } }
        } else {
            MPI_Query_thread(&provided)
        }
        progress = provided >= cmpi_thread_serialized() ? MPIProgress() : nil
        comm = cmpi_comm_world()
        MPI_Comm_set_errhandler(comm, cmpi_errors_return())
        var r: Int32 = 0, s: Int32 = 0
        MPI_Comm_rank(comm, &r)
        MPI_Comm_size(comm, &s)
        rank = Int(r)
        size = Int(s)
    }

    public func allToAllV(send: UnsafeBufferPointer<Float>, sendCounts: [Int],
                          receive: UnsafeMutableBufferPointer<Float>, receiveCounts: [Int]) {
        precondition(sendCounts.count == size && receiveCounts.count == size, "allToAllV: counts for \(size) ranks")
        let (sendOffsets, sendTotal) = MessageCounts.offsets(sendCounts)
        let (receiveOffsets, receiveTotal) = MessageCounts.offsets(receiveCounts)
        precondition(sendTotal <= send.count && receiveTotal <= receive.count, "allToAllV: buffers smaller than the counts")
        let sc = int32s(sendCounts, "MPI_Alltoallv"), sd = int32s(sendOffsets, "MPI_Alltoallv")
        let rc = int32s(receiveCounts, "MPI_Alltoallv"), rd = int32s(receiveOffsets, "MPI_Alltoallv")
        check(mpi.withLock { MPI_Alltoallv(send.baseAddress, sc, sd, cmpi_float(), receive.baseAddress, rc, rd, cmpi_float(), comm) },
              "MPI_Alltoallv")
    }

    public func startAllToAllV(send: UnsafeBufferPointer<Float>, sendCounts: [Int],
                               receive: UnsafeMutableBufferPointer<Float>, receiveCounts: [Int]) -> any PendingCollective {
        precondition(sendCounts.count == size && receiveCounts.count == size, "startAllToAllV: counts for \(size) ranks")
        let (sendOffsets, sendTotal) = MessageCounts.offsets(sendCounts)
        let (receiveOffsets, receiveTotal) = MessageCounts.offsets(receiveCounts)
        precondition(sendTotal <= send.count && receiveTotal <= receive.count, "startAllToAllV: buffers smaller than the counts")
        let request = MPIRequest(communicator: self, counts: [sendCounts, sendOffsets, receiveCounts, receiveOffsets].map { int32s($0, "MPI_Ialltoallv") })
        let c = request.counts
        check(mpi.withLock {
            MPI_Ialltoallv(send.baseAddress, c[0], c[1], cmpi_float(), receive.baseAddress, c[2], c[3], cmpi_float(), comm, &request.handle)
        }, "MPI_Ialltoallv")
        progress?.watch(request)
        return request
    }

    public func allGather(_ values: [Int64]) -> [Int64] {
        var out = [Int64](repeating: 0, count: values.count * size)
        let n = int32s([values.count], "MPI_Allgather")[0]
        values.withUnsafeBufferPointer { mine in
            out.withUnsafeMutableBufferPointer { all in
                check(mpi.withLock { MPI_Allgather(mine.baseAddress, n, cmpi_int64(), all.baseAddress, n, cmpi_int64(), comm) }, "MPI_Allgather")
            }
        }
        return out
    }

    public func allGatherV(send: UnsafeBufferPointer<Float>, receive: UnsafeMutableBufferPointer<Float>, counts: [Int]) {
        precondition(counts.count == size && counts[rank] == send.count, "allGatherV: counts \(counts), sending \(send.count)")
        let (offsets, total) = MessageCounts.offsets(counts)
        precondition(total <= receive.count, "allGatherV: \(total) values into \(receive.count)")
        let c = int32s(counts, "MPI_Allgatherv"), d = int32s(offsets, "MPI_Allgatherv")
        check(mpi.withLock { MPI_Allgatherv(send.baseAddress, c[rank], cmpi_float(), receive.baseAddress, c, d, cmpi_float(), comm) },
              "MPI_Allgatherv")
    }

    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Float>) {
        let n = int32s([values.count], "MPI_Allreduce")[0]
        check(mpi.withLock { MPI_Allreduce(cmpi_in_place(), values.baseAddress, n, cmpi_float(), cmpi_sum(), comm) }, "MPI_Allreduce")
    }

    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Double>) {
        let n = int32s([values.count], "MPI_Allreduce")[0]
        check(mpi.withLock { MPI_Allreduce(cmpi_in_place(), values.baseAddress, n, cmpi_double(), cmpi_sum(), comm) }, "MPI_Allreduce")
    }

    public func barrier() { check(mpi.withLock { MPI_Barrier(comm) }, "MPI_Barrier") }

    /// Whether MPI is running (initialised, not finalised) with more than one rank.
    static var sharedWorld: Bool {
        var initialized: Int32 = 0, finalized: Int32 = 0
        MPI_Initialized(&initialized)
        MPI_Finalized(&finalized)
        guard initialized != 0, finalized == 0 else { return false }
        var size: Int32 = 0
        MPI_Comm_size(cmpi_comm_world(), &size)
        return size > 1
    }

    /// MPI's `int` counts: a count of 2^31 or more ends the job with a message (it cannot be sent).
    fileprivate func int32s(_ values: [Int], _ call: String) -> [Int32] {
        values.map { v in
            guard let c = Int32(exactly: v) else { fail(call, "a count of \(v) elements does not fit MPI's int") }
            return c
        }
    }

    fileprivate func check(_ code: Int32, _ call: String) {
        guard code != cmpi_success() else { return }
        var text = [CChar](repeating: 0, count: Int(cmpi_max_error_string()) + 1)
        var length: Int32 = 0
        _ = mpi.withLock { MPI_Error_string(code, &text, &length) }
        fail(call, String(decoding: text.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }

    private func fail(_ call: String, _ message: String) -> Never {
        FileHandle.standardError.write(Data("moe: rank \(rank) of \(size): \(call) failed: \(message)\n".utf8))
        _ = mpi.withLock { MPI_Abort(comm, 1) }
        exit(1)
    }
}

/// One `MPI_Ialltoallv` in flight: its request handle and the count arrays MPI reads until it
/// is done.
final class MPIRequest: PendingCollective, @unchecked Sendable {
    unowned let communicator: MPICommunicator
    /// Send counts and displacements, receive counts and displacements.
    let counts: [UnsafeMutablePointer<Int32>]
    /// MPI's handle; `MPI_REQUEST_NULL` once done. Read and written under the MPI lock.
    var handle: MPI_Request?
    /// Set under the MPI lock by the first test that finds it done.
    private var done: UInt64?
    var finishedAt: UInt64? { communicator.mpi.withLock { done } }

    init(communicator: MPICommunicator, counts: [[Int32]]) {
        self.communicator = communicator
        self.counts = counts.map { values in
            let p = UnsafeMutablePointer<Int32>.allocate(capacity: max(1, values.count))
            p.initialize(from: values, count: values.count)
            return p
        }
    }

    deinit { counts.forEach { $0.deallocate() } }

    func test() -> Bool {
        var flag: Int32 = 0
        communicator.check(communicator.mpi.withLock {
            let code = MPI_Test(&handle, &flag, cmpi_status_ignore())
            if flag != 0 && done == nil { done = DispatchTime.now().uptimeNanoseconds }
            return code
        }, "MPI_Test")
        return flag != 0
    }

    /// Polls rather than blocking in `MPI_Wait`, so that the lock is not held while waiting.
    func wait() {
        while !test() { usleep(20) }
    }
}

/// The thread that moves non-blocking exchanges along while their rank computes: it tests
/// each pending request every 50 µs and sleeps when none is pending.
final class MPIProgress: @unchecked Sendable {
    private let condition = NSCondition()
    private var pending: [MPIRequest] = []

    init() {
        let thread = Thread { [unowned self] in self.loop() }
        thread.name = "moe-mpi-progress"
        thread.start()
    }

    func watch(_ request: MPIRequest) {
        condition.lock()
        pending.append(request)
        condition.signal()
        condition.unlock()
    }

    private func loop() {
        while true {
            condition.lock()
            while pending.isEmpty { condition.wait() }
            let now = pending
            condition.unlock()
            let done = Set(now.filter { $0.test() }.map { ObjectIdentifier($0) })
            condition.lock()
            pending.removeAll { done.contains(ObjectIdentifier($0)) }
            condition.unlock()
            usleep(50)
        }
    }
}
#endif
