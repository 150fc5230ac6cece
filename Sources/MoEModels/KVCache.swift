import MoECore

/// Keys and values of every layer for the positions seen so far, so each new token attends
/// to the past without recomputing it.
///
/// Layout per layer: keys [kvHeads, capacity, keyDim] and values [kvHeads, capacity, valueDim],
/// so each key/value head's positions are contiguous rows (attention reads them with the
/// matvec leaf); the first `length` positions are filled. Capacity doubles as needed. Keys and
/// values may differ in width (multi-head latent attention: nope + rope dims against v dims).
/// Elements are f32 (exact, the default) or f16 (`dtype`, as llama.cpp's default cache): half
/// the memory and half the bytes each decoded token reads at long contexts, with keys and
/// values rounded to f16 as they are stored.
public struct KVCache: Sendable {
    public let layers: Int, kvHeads: Int, keyDim: Int, valueDim: Int
    /// The element type: `.f32` or `.f16`.
    public let dtype: DType
    /// Positions filled.
    public private(set) var length = 0
    var capacity: Int
    var keys: [Tensor], values: [Tensor]

    public init(layers: Int, kvHeads: Int, keyDim: Int, valueDim: Int, capacity: Int = 256, dtype: DType = .f32) {
        precondition(dtype == .f32 || dtype == .f16, "KVCache: \(dtype) is not f32 or f16")
        self.layers = layers
        self.kvHeads = kvHeads
        self.keyDim = keyDim
        self.valueDim = valueDim
        self.dtype = dtype
        self.capacity = max(1, capacity)
        keys = (0..<layers).map { _ in Tensor(zeros: [kvHeads, max(1, capacity), keyDim], dtype: dtype) }
        values = keys.map { _ in Tensor(zeros: [kvHeads, max(1, capacity), valueDim], dtype: dtype) }
    }

    /// Bytes the cache takes at `capacity` positions.
    public func bytes(capacity: Int) -> Int { layers * kvHeads * capacity * (keyDim + valueDim) * dtype.byteSize }

    /// Makes room for `extra` more positions: capacity doubles, but not past `limit` bytes where
    /// the positions needed fit under it (the caller has checked that they do).
    mutating func reserve(_ extra: Int, limit: Int = .max) {
        guard length + extra > capacity else { return }
        var newCapacity = capacity
        while newCapacity < length + extra { newCapacity *= 2 }
        if bytes(capacity: newCapacity) > limit { newCapacity = length + extra }
        let size = dtype.byteSize
        for l in 0..<layers {
            for which in 0..<2 {
                let old = which == 0 ? keys[l] : values[l]
                let dim = which == 0 ? keyDim : valueDim
                let grown = Tensor(zeros: [kvHeads, newCapacity, dim], dtype: dtype)
                for g in 0..<kvHeads {
                    (grown.mutableRawPointer + g * newCapacity * dim * size)
                        .copyMemory(from: old.rawPointer + g * capacity * dim * size, byteCount: length * dim * size)
                }
                if which == 0 { keys[l] = grown } else { values[l] = grown }
            }
        }
        capacity = newCapacity
    }

    /// Writes k [T, kvHeads, keyDim] and v [T, kvHeads, valueDim] (f32) for layer l at positions
    /// length ..< length + T, in the cache's element type.
    mutating func store(layer l: Int, keys k: Tensor, values v: Tensor) {
        let t = k.shape[0], size = dtype.byteSize
        for (src, dst, d) in [(k, keys[l], keyDim), (v, values[l], valueDim)] {
            let from = src.rawPointer.assumingMemoryBound(to: Float.self), to = dst.mutableRawPointer
            for ti in 0..<t {
                for g in 0..<kvHeads {
                    let row = to + ((g * capacity + length + ti) * d) * size, source = from + (ti * kvHeads + g) * d
                    if dtype == .f32 {
                        row.copyMemory(from: source, byteCount: d * 4)
                    } else {
                        Kernels.narrow(source, count: d, to: dtype, into: row)
                    }
                }
            }
        }
    }

    /// Layer l's keys (keyDim wide) or values (valueDim wide) of head g: `capacity` rows of
    /// `dtype` elements.
    func rows(layer l: Int, head g: Int, values: Bool) -> UnsafeRawPointer {
        let t = values ? self.values[l] : keys[l]
        let d = values ? valueDim : keyDim
        return t.rawPointer + g * capacity * d * dtype.byteSize
    }

    /// Fetches the lines layer l's keys and values of the next position go to (`store`'s
    /// destination for one token) into the cache ahead of the store, so a decode step's store
    /// writes to lines already there rather than waiting on each, one at a time.
    func prefetchNextRow(layer l: Int) {
        guard length < capacity else { return }
        let size = dtype.byteSize
        for g in 0..<kvHeads {
            Kernels.prefetch(rows(layer: l, head: g, values: false) + length * keyDim * size, bytes: keyDim * size)
            Kernels.prefetch(rows(layer: l, head: g, values: true) + length * valueDim * size, bytes: valueDim * size)
        }
    }

    /// Marks `t` more positions as filled (after every layer stored them).
    mutating func advance(_ t: Int) { length += t }

    /// A cache of no layers: what a variable holds while its real cache is moved into an array
    /// for a batched pass, so that the array's copy is the only owner (no copy on growth).
    public static let placeholder = KVCache(layers: 0, kvHeads: 0, keyDim: 0, valueDim: 0, capacity: 1)

    /// Bytes the cache's tensors take.
    public var byteCount: Int { bytes(capacity: capacity) }

    /// Forgets everything (a new sequence).
    public mutating func reset() { length = 0 }
}
