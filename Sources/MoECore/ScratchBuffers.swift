import Synchronization

/// Small buffers kept for reuse: a decode step makes and drops a few hundred of them (small
/// tensors' storage, each product's quantized activation rows), and the allocator's own cost
/// for them (with its coalescing of freed chunks) was a visible part of the calling thread's
/// serial time, during which the other threads wait. Buffers up to `largest` bytes come back
/// here (at most `kept` of them and `keptBytes` in all); larger ones, and any past those, go
/// back to the allocator.
enum ScratchBuffers {
    static let largest = 256 << 10
    static let kept = 64
    static let keptBytes = 2 << 20
    private struct Free {
        /// Addresses as integers: a raw pointer is not `Sendable`, which the lock's state must be.
        var list: [(address: UInt, capacity: Int)] = []
        var bytes = 0
    }
    private static let free = Mutex(Free())

    /// A 64-byte aligned buffer of at least `byteCount` bytes (contents unspecified), and its
    /// capacity, to hand back to `give`.
    static func take(_ byteCount: Int) -> (pointer: UnsafeMutableRawPointer, capacity: Int) {
        // Sizes in classes, so a buffer given back fits the next request of its class: 256-byte
        // steps up to 4 KiB, 4 KiB steps past it.
        let step = byteCount <= 4096 ? 256 : 4096
        let capacity = (max(1, byteCount) + step - 1) / step * step
        if capacity <= largest {
            let found = free.withLock { free -> UInt? in
                guard let i = free.list.lastIndex(where: { $0.capacity == capacity }) else { return nil }  // the warmest
                free.bytes -= capacity
                return free.list.remove(at: i).address
            }
            if let found, let pointer = UnsafeMutableRawPointer(bitPattern: found) { return (pointer, capacity) }
        }
        return (UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64), capacity)
    }

    /// Returns a buffer `take` gave.
    static func give(_ pointer: UnsafeMutableRawPointer, capacity: Int) {
        if capacity <= largest {
            let kept = free.withLock { free -> Bool in
                guard free.list.count < Self.kept && free.bytes + capacity <= Self.keptBytes else { return false }
                free.list.append((UInt(bitPattern: pointer), capacity))
                free.bytes += capacity
                return true
            }
            if kept { return }
        }
        pointer.deallocate()
    }

    /// Hands every kept buffer back to the allocator.
    static func drain() {
        let addresses = free.withLock { free -> [UInt] in
            defer { free = Free() }
            return free.list.map(\.address)
        }
        for a in addresses { UnsafeMutableRawPointer(bitPattern: a)?.deallocate() }
    }
}
