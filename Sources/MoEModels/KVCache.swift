import MoECore

/// Keys and values of every layer for the positions seen so far, so each new token attends
/// to the past without recomputing it.
///
/// Layout per layer: [kvHeads, capacity, headDim] f32 for keys and for values, so each
/// key/value head's positions are contiguous rows (attention reads them with the matvec leaf);
/// the first `length` positions are filled. Capacity doubles as needed.
public struct KVCache: Sendable {
    public let layers: Int, kvHeads: Int, headDim: Int
    /// Positions filled.
    public private(set) var length = 0
    var capacity: Int
    var keys: [Tensor], values: [Tensor]

    public init(layers: Int, kvHeads: Int, headDim: Int, capacity: Int = 256) {
        self.layers = layers
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.capacity = max(1, capacity)
        keys = (0..<layers).map { _ in Tensor(zeros: [kvHeads, max(1, capacity), headDim]) }
        values = keys.map { _ in Tensor(zeros: [kvHeads, max(1, capacity), headDim]) }
    }

    /// Makes room for `extra` more positions.
    mutating func reserve(_ extra: Int) {
        guard length + extra > capacity else { return }
        var newCapacity = capacity
        while newCapacity < length + extra { newCapacity *= 2 }
        for l in 0..<layers {
            for which in 0..<2 {
                let old = which == 0 ? keys[l] : values[l]
                let grown = Tensor(zeros: [kvHeads, newCapacity, headDim])
                for g in 0..<kvHeads {
                    (grown.mutableRawPointer + g * newCapacity * headDim * 4)
                        .copyMemory(from: old.rawPointer + g * capacity * headDim * 4, byteCount: length * headDim * 4)
                }
                if which == 0 { keys[l] = grown } else { values[l] = grown }
            }
        }
        capacity = newCapacity
    }

    /// Writes k and v [T, kvHeads, headDim] for layer l at positions length ..< length + T.
    mutating func store(layer l: Int, keys k: Tensor, values v: Tensor) {
        let t = k.shape[0], d = headDim
        for (src, dst) in [(k, keys[l]), (v, values[l])] {
            let from = src.rawPointer, to = dst.mutableRawPointer
            for ti in 0..<t {
                for g in 0..<kvHeads {
                    (to + ((g * capacity + length + ti) * d) * 4).copyMemory(from: from + ((ti * kvHeads + g) * d) * 4, byteCount: d * 4)
                }
            }
        }
    }

    /// Layer l's keys or values of head g: `capacity` rows of headDim floats.
    func rows(layer l: Int, head g: Int, values: Bool) -> UnsafePointer<Float> {
        let t = values ? self.values[l] : keys[l]
        return (t.rawPointer + g * capacity * headDim * 4).assumingMemoryBound(to: Float.self)
    }

    /// Marks `t` more positions as filled (after every layer stored them).
    mutating func advance(_ t: Int) { length += t }

    /// Forgets everything (a new sequence).
    public mutating func reset() { length = 0 }
}
