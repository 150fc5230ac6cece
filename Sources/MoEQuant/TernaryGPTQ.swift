import Foundation
import MoECore

// Dimension legend: N weight rows, K input features (columns), B GPTQ block of columns.

/// GPTQ (Frantar et al. 2023) onto QMoE's ternary grid: each row of W [N, K] is quantized to
/// {lo, 0, hi} (lo = min(row, 0), hi = max(row, 0), both rounded to f16 as they are stored),
/// one column at a time, and each column's error is fed back into the columns not yet
/// quantized through the inverse Hessian of the layer's inputs, H = X^T X: dampened by
/// `damp` times its mean diagonal, inverted through its Cholesky factor, applied in blocks of
/// `blockSize` columns (the updates past a block are one matrix product). Columns no input
/// reached (zero diagonal) are zeroed, as GPTQ does. With no Hessian (an expert that received
/// too few tokens), every weight rounds to its nearest grid point.
public enum TernaryGPTQ {
    /// The knobs, with GPTQ's defaults.
    public struct Options: Sendable {
        /// Dampening: this fraction of the mean of H's diagonal is added to it.
        public var damp: Double = 0.01
        /// Columns per lazy-update block.
        public var blockSize: Int = 128
        /// Where each row's lo and hi sit.
        public var grid: Grid = .minMax
        /// A weight rounds to 0 unless it passes this fraction of hi (or of lo): 0.5 is
        /// rounding to nearest; more widens the zero band (a dead-zone quantizer), which GPTQ's
        /// error feedback then spreads over the columns still to come: more zeros, longer
        /// dictionary runs, fewer bits.
        public var deadZone: Double = 0.5
        public init(damp: Double = 0.01, blockSize: Int = 128, grid: Grid = .minMax, deadZone: Double = 0.5) {
            self.damp = damp
            self.blockSize = blockSize
            self.grid = grid
            self.deadZone = deadZone
        }
    }

    /// Each row's grid {lo, 0, hi}.
    public enum Grid: String, Sendable, CaseIterable {
        /// lo = min(row, 0), hi = max(row, 0): QMoE's grid; most weights round to 0.
        case minMax = "minmax"
        /// lo and hi the row's min and max times the factor f in 0.2...1 (steps of 0.05) whose
        /// round-to-nearest error is least (GPTQ's `mse` grid search): fewer zeros, more bits.
        case mse
    }

    /// The result: values -1, 0, 1 per weight (row-major [N, K]) and each row's lo and hi.
    public struct Result: Sendable {
        public var values: [Int8]
        public var lo: [Float], hi: [Float]
    }

    /// A Hessian made ready for GPTQ, once for every weight that reads the same inputs (an
    /// expert's gate and up): its dead columns (zero diagonal) and H^-1's upper Cholesky factor
    /// U after the dampening.
    public struct Factor: Sendable {
        let dead: [Bool]
        let u: [Double]

        /// Factors `hessian` (row-major [cols, cols], X^T X summed over the inputs) with `damp`.
        public init(hessian: [Double], cols: Int, damp: Double) {
            precondition(hessian.count == cols * cols, "TernaryGPTQ.Factor: sizes")
            var h = hessian
            var dead = [Bool](repeating: false, count: cols), meanDiag = 0.0
            for j in 0..<cols {
                if h[j * cols + j] == 0 {
                    h[j * cols + j] = 1
                    dead[j] = true
                }
                meanDiag += h[j * cols + j]
            }
            meanDiag /= Double(cols)
            for j in 0..<cols { h[j * cols + j] += damp * meanDiag }
            self.dead = dead
            u = upperCholeskyOfInverse(h, cols)  // H^-1 = U^T U, U upper triangular
        }
    }

    /// Quantizes `weight` (row-major [rows, cols]) with `hessian` (row-major [cols, cols],
    /// X^T X summed over the inputs; nil: round to nearest).
    public static func quantize(weight: [Float], rows: Int, cols: Int, hessian: [Double]?, options: Options = Options(),
                                pool: ThreadPool = .shared) -> Result {
        quantize(weight: weight, rows: rows, cols: cols, factor: hessian.map { Factor(hessian: $0, cols: cols, damp: options.damp) },
                 options: options, pool: pool)
    }

    /// Quantizes `weight` (row-major [rows, cols]) with a factored Hessian (nil: round to nearest).
    public static func quantize(weight: [Float], rows: Int, cols: Int, factor: Factor?, options: Options = Options(),
                                pool: ThreadPool = .shared) -> Result {
        precondition(weight.count == rows * cols && (factor?.dead.count ?? cols) == cols, "TernaryGPTQ: sizes")
        var w = weight
        let zone = Float(options.deadZone)
        // The grid, from the weights before any update (GPTQ's find_params), as stored.
        var lo = [Float](repeating: 0, count: rows), hi = lo
        for r in 0..<rows {
            var mn: Float = 0, mx: Float = 0
            for j in 0..<cols { mn = min(mn, w[r * cols + j]); mx = max(mx, w[r * cols + j]) }
            lo[r] = mn
            hi[r] = mx
        }
        if options.grid == .mse {
            for r in 0..<rows {
                var best = Float.infinity, bestF: Float = 1
                for i in 0...16 {  // f = 1, 0.95, ..., 0.2
                    let f = Float(1) - Float(i) * 0.05
                    let (l, h) = (lo[r] * f, hi[r] * f)
                    var err: Float = 0
                    for j in 0..<cols {
                        let x = w[r * cols + j], t = nearest(x, l, h, zone), q: Float = t > 0 ? h : t < 0 ? l : 0
                        err += (x - q) * (x - q)
                    }
                    if err < best { (best, bestF) = (err, f) }
                }
                lo[r] *= bestF
                hi[r] *= bestF
            }
        }
        lo = roundedToF16(lo)
        hi = roundedToF16(hi)
        var values = [Int8](repeating: 0, count: rows * cols)
        guard let factor else {
            for r in 0..<rows { for j in 0..<cols { values[r * cols + j] = nearest(w[r * cols + j], lo[r], hi[r], zone) } }
            return Result(values: values, lo: lo, hi: hi)
        }
        // Dead columns: no input reached them, so their weights never matter; zero them.
        for j in 0..<cols where factor.dead[j] { for r in 0..<rows { w[r * cols + j] = 0 } }
        let u = factor.u
        var wd = w.map(Double.init)
        let b = max(1, options.blockSize)
        // Rows are independent: each runs its columns in order, and the rows split over the pool.
        wd.withUnsafeMutableBufferPointer { w in
            values.withUnsafeMutableBufferPointer { values in
                u.withUnsafeBufferPointer { u in
                    let (w, values, u) = (w.baseAddress!, values.baseAddress!, u.baseAddress!)
                    pool.parallelFor(rows) { r in
                        quantizeRow(w + r * cols, cols, lo: Double(lo[r]), hi: Double(hi[r]), deadZone: Double(zone), u: u, block: b,
                                    into: values + r * cols)
                    }
                }
            }
        }
        return Result(values: values, lo: lo, hi: hi)
    }

    /// One row of GPTQ: column i is rounded to the grid, and its error over U[i, i] is taken
    /// from columns i+1 ..< the block's end at once and from the columns past the block when the
    /// block ends (GPTQ's lazy batch updates, for one row).
    static func quantizeRow(_ row: UnsafeMutablePointer<Double>, _ cols: Int, lo: Double, hi: Double, deadZone: Double,
                            u: UnsafePointer<Double>, block b: Int, into values: UnsafeMutablePointer<Int8>) {
        var err = [Double](repeating: 0, count: b)
        for i1 in stride(from: 0, to: cols, by: b) {
            let i2 = min(cols, i1 + b)
            for i in i1..<i2 {
                let x = row[i], t = nearest(x, lo, hi, deadZone)
                values[i] = t
                let e = (x - (t > 0 ? hi : t < 0 ? lo : 0)) / u[i * cols + i]
                err[i - i1] = e
                let ui = u + i * cols
                for j in (i + 1)..<max(i + 1, i2) { row[j] -= e * ui[j] }
            }
            for i in i1..<i2 where err[i - i1] != 0 {
                let e = err[i - i1], ui = u + i * cols
                for j in i2..<cols { row[j] -= e * ui[j] }
            }
        }
    }

    /// x on the grid lo, 0, hi as -1, 0, 1: 1 when x passes `deadZone` times hi, -1 when it
    /// passes that fraction of lo, else 0 (with 0.5, the nearest point; a tie goes to 0).
    @inline(__always) static func nearest<T: BinaryFloatingPoint>(_ x: T, _ lo: T, _ hi: T, _ deadZone: T = 0.5) -> Int8 {
        if x > 0 { return hi > 0 && x - hi * deadZone > 0 ? 1 : 0 }
        return lo < 0 && x - lo * deadZone < 0 ? -1 : 0
    }

    static func roundedToF16(_ v: [Float]) -> [Float] { TernaryMatrix.f16Values(TernaryMatrix.f16Bits(v)) }

    /// U upper triangular with H^-1 = U^T U, for H symmetric positive definite [n, n]: the
    /// Cholesky factor L of H, its inverse, H^-1 = L^-T L^-1, then H^-1's upper Cholesky
    /// factor (GPTQ's `cholesky_inverse` then `cholesky(upper=True)`). f64 throughout.
    static func upperCholeskyOfInverse(_ h: [Double], _ n: Int) -> [Double] {
        var l = cholesky(h, n)
        // L^-1 in place (lower triangular), column by column.
        var inv = [Double](repeating: 0, count: n * n)
        l.withUnsafeMutableBufferPointer { l in
            inv.withUnsafeMutableBufferPointer { v in
                for j in 0..<n {
                    v[j * n + j] = 1 / l[j * n + j]
                    for i in (j + 1)..<max(j + 1, n) {
                        var s = 0.0
                        for k in j..<i { s += l[i * n + k] * v[k * n + j] }
                        v[i * n + j] = -s / l[i * n + i]
                    }
                }
            }
        }
        // H^-1 = L^-T L^-1: element (i, j) = sum over k >= max(i, j) of inv[k, i] inv[k, j].
        var hinv = [Double](repeating: 0, count: n * n)
        inv.withUnsafeBufferPointer { v in
            hinv.withUnsafeMutableBufferPointer { out in
                for k in 0..<n {
                    let row = v.baseAddress! + k * n
                    for i in 0...k {
                        let a = row[i]
                        if a == 0 { continue }
                        let o = out.baseAddress! + i * n
                        for j in i...k { o[j] += a * row[j] }
                    }
                }
                for i in 0..<n { for j in 0..<i { out[i * n + j] = out[j * n + i] } }
            }
        }
        // Upper Cholesky of H^-1: the transpose of its lower factor.
        let lower = cholesky(hinv, n)
        var u = [Double](repeating: 0, count: n * n)
        for i in 0..<n { for j in 0...i { u[j * n + i] = lower[i * n + j] } }
        return u
    }

    /// The lower Cholesky factor of a symmetric positive definite [n, n] (row-major). A pivot
    /// that is not positive (H singular past the dampening) is lifted to a tiny positive value.
    static func cholesky(_ a: [Double], _ n: Int) -> [Double] {
        var l = [Double](repeating: 0, count: n * n)
        l.withUnsafeMutableBufferPointer { l in
            a.withUnsafeBufferPointer { a in
                for i in 0..<n {
                    let li = l.baseAddress! + i * n
                    for j in 0...i {
                        let lj = l.baseAddress! + j * n
                        var s = a[i * n + j]
                        for k in 0..<j { s -= li[k] * lj[k] }
                        if i == j {
                            li[j] = s > 1e-300 ? s.squareRoot() : 1e-150
                        } else {
                            li[j] = s / lj[j]
                        }
                    }
                }
            }
        }
        return l
    }
}
