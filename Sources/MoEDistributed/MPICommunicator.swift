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
public final class MPICommunicator: Communicator, @unchecked Sendable {
    public let rank: Int
    public let size: Int
    private let comm: MPI_Comm

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
        }
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
        check(MPI_Alltoallv(send.baseAddress, sc, sd, cmpi_float(), receive.baseAddress, rc, rd, cmpi_float(), comm), "MPI_Alltoallv")
    }

    public func allGather(_ values: [Int64]) -> [Int64] {
        var out = [Int64](repeating: 0, count: values.count * size)
        let n = int32s([values.count], "MPI_Allgather")[0]
        values.withUnsafeBufferPointer { mine in
            out.withUnsafeMutableBufferPointer { all in
                check(MPI_Allgather(mine.baseAddress, n, cmpi_int64(), all.baseAddress, n, cmpi_int64(), comm), "MPI_Allgather")
            }
        }
        return out
    }

    public func allGatherV(send: UnsafeBufferPointer<Float>, receive: UnsafeMutableBufferPointer<Float>, counts: [Int]) {
        precondition(counts.count == size && counts[rank] == send.count, "allGatherV: counts \(counts), sending \(send.count)")
        let (offsets, total) = MessageCounts.offsets(counts)
        precondition(total <= receive.count, "allGatherV: \(total) values into \(receive.count)")
        let c = int32s(counts, "MPI_Allgatherv"), d = int32s(offsets, "MPI_Allgatherv")
        check(MPI_Allgatherv(send.baseAddress, c[rank], cmpi_float(), receive.baseAddress, c, d, cmpi_float(), comm), "MPI_Allgatherv")
    }

    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Float>) {
        let n = int32s([values.count], "MPI_Allreduce")[0]
        check(MPI_Allreduce(cmpi_in_place(), values.baseAddress, n, cmpi_float(), cmpi_sum(), comm), "MPI_Allreduce")
    }

    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Double>) {
        let n = int32s([values.count], "MPI_Allreduce")[0]
        check(MPI_Allreduce(cmpi_in_place(), values.baseAddress, n, cmpi_double(), cmpi_sum(), comm), "MPI_Allreduce")
    }

    public func barrier() { check(MPI_Barrier(comm), "MPI_Barrier") }

    /// MPI's `int` counts: a count of 2^31 or more ends the job with a message (it cannot be sent).
    private func int32s(_ values: [Int], _ call: String) -> [Int32] {
        values.map { v in
            guard let c = Int32(exactly: v) else { fail(call, "a count of \(v) elements does not fit MPI's int") }
            return c
        }
    }

    private func check(_ code: Int32, _ call: String) {
        guard code != cmpi_success() else { return }
        var text = [CChar](repeating: 0, count: Int(cmpi_max_error_string()) + 1)
        var length: Int32 = 0
        MPI_Error_string(code, &text, &length)
        fail(call, String(decoding: text.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }

    private func fail(_ call: String, _ message: String) -> Never {
        FileHandle.standardError.write(Data("moe: rank \(rank) of \(size): \(call) failed: \(message)\n".utf8))
        MPI_Abort(comm, 1)
        exit(1)
    }
}
#endif
