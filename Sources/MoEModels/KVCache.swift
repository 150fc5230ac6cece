import MoECore

/// Keys and values of every layer for the positions seen so far, so each new token attends
/// to the past without recomputing it.
///
/// Layout per layer: [capacity, kvHeads, headDim] f32 for keys and for values; the first
/// `length` positions are filled. Capacity doubles as needed.
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
        keys = (0..<layers).map { _ in Tensor(zeros: [max(1, capacity), kvHeads, headDim]) }
        values = keys.map { _ in Tensor(zeros: [max(1, capacity), kvHeads, headDim]) }
    }

    /// Makes room for `extra` more positions.
    mutating func reserve(_ extra: Int) {
        guard length + extra > capacity else { return }
        var newCapacity = capacity
        while newCapacity < length + extra { newCapacity *= 2 }
        let row = kvHeads * headDim
        for l in 0..<layers {
            for which in 0..<2 {
                let old = which == 0 ? keys[l] : values[l]
                let grown = Tensor(zeros: [newCapacity, kvHeads, headDim])
                grown.mutableRawPointer.copyMemory(from: old.rawPointer, byteCount: length * row * 4)
                if which == 0 { keys[l] = grown } else { values[l] = grown }
            }
        }
        capacity = newCapacity
    }

    /// Writes k and v [T, kvHeads, headDim] for layer l at positions length ..< length + T.
    mutating func store(layer l: Int, keys k: Tensor, values v: Tensor) {
        let row = kvHeads * headDim, t = k.shape[0]
        (keys[l].mutableRawPointer + length * row * 4).copyMemory(from: k.rawPointer, byteCount: t * row * 4)
        (values[l].mutableRawPointer + length * row * 4).copyMemory(from: v.rawPointer, byteCount: t * row * 4)
    }

    /// Marks `t` more positions as filled (after every layer stored them).
    mutating func advance(_ t: Int) { length += t }

    /// Forgets everything (a new sequence).
    public mutating func reset() { length = 0 }
}
