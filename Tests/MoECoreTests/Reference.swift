import MoECore
import _MoEKernels
import XCTest

/// Slow, obviously correct references for the kernels, accumulating in Double.
enum Reference {
    /// out[m][n] = sum_k x[m][k] * w[n][k]; also returns sum_k |x w| per element (error scale).
    static func matmul(_ x: [Float], _ w: [Float], m: Int, n: Int, k: Int) -> (out: [Float], scale: [Float]) {
        var out = [Float](repeating: 0, count: m * n), scale = out
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0, a = 0.0
                for t in 0..<k {
                    let p = Double(x[i * k + t]) * Double(w[j * k + t])
                    s += p
                    a += abs(p)
                }
                out[i * n + j] = Float(s)
                scale[i * n + j] = Float(a)
            }
        }
        return (out, scale)
    }
}

/// Pools of 1 and 2 threads, made once for the whole test run.
let testPools = [ThreadPool(threads: 1), ThreadPool(threads: 2)]
