#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import MoECore

/// Routed experts kept in memory under a byte budget, read on demand from the model's files.
///
/// Each entry is one expert of one layer (its gate, up and down weights, in their stored dtype),
/// read with `pread` from the file its tensors are mapped from, so the mapping itself is never
/// touched and the process holds only what the cache holds. When an entry must come in and
/// the cache is full, the entry the policy ranks lowest (and not in use by the running layer)
/// goes. A layer whose chosen experts do not fit at once runs them in groups that do
/// (`CachedExperts`). The weights are the stored bytes, so outputs equal the resident model's
/// exactly. Thread-safe; one layer runs at a time per model.
public final class ExpertCache: @unchecked Sendable {
    /// Which entry leaves when the cache is full.
    public enum Policy: String, Sendable, CaseIterable {
        /// Least recently used.
        case lru
        /// Least frequently used (count of layer passes that chose it), ties by recency.
        case lfu
    }

    /// What the cache has done since it was made (or `resetStatistics`).
    public struct Statistics: Sendable, Equatable {
        /// Expert uses served from memory, and those that had to read the file.
        public var hits = 0, misses = 0
        /// Bytes read from files, and seconds spent reading them.
        public var bytesRead = 0
        public var readSeconds = 0.0
        /// Entries evicted.
        public var evictions = 0
        public init() {}
        /// Of hits and misses, the fraction that were hits (0 when there were none).
        public var hitRate: Double { hits + misses == 0 ? 0 : Double(hits) / Double(hits + misses) }
    }

    /// Most bytes of expert weights held at once.
    public let capacity: Int
    public let policy: Policy
    private let lock = NSLock()
    private var entries: [Key: Entry] = [:]
    private var held = 0, clock = 0
    private var stats = Statistics()
    private var files: [String: Int32] = [:]
    private var failure: MoEError?

    struct Key: Hashable { let layer: Int, expert: Int }

    final class Entry {
        let weights: [Tensor]
        let bytes: Int
        var lastUse = 0, uses = 0, pins = 0
        init(weights: [Tensor], bytes: Int) {
            self.weights = weights
            self.bytes = bytes
        }
    }

    /// A cache of at most `capacity` bytes of expert weights.
    public init(capacity: Int, policy: Policy = .lru) {
        precondition(capacity >= 0, "ExpertCache: negative capacity")
        self.capacity = capacity
        self.policy = policy
    }

    deinit { for fd in files.values { close(fd) } }

    /// Bytes held now.
    public var bytesHeld: Int { lock.withLock { held } }
    /// Entries held now.
    public var count: Int { lock.withLock { entries.count } }
    /// The counts so far.
    public var statistics: Statistics { lock.withLock { stats } }
    public func resetStatistics() { lock.withLock { stats = Statistics() } }

    /// The first read failure since the last call, cleared by this call. Outputs computed
    /// after a failure are not valid; `DecoderModel` checks this after every layer.
    public func takeFailure() -> MoEError? {
        lock.withLock {
            defer { failure = nil }
            return failure
        }
    }

    /// Expert `expert` of `layer`: `source` (weights mapped from a file) as copies in memory,
    /// read now when absent, and pinned until `release`; nil (with the failure recorded) when
    /// the file cannot be read or the entry cannot fit beside the pinned ones.
    public func acquire(layer: Int, expert: Int, source: [Tensor]) -> [Tensor]? {
        lock.lock()
        defer { lock.unlock() }
        clock += 1
        let key = Key(layer: layer, expert: expert)
        if let e = entries[key] {
            e.pins += 1
            e.lastUse = clock
            e.uses += 1
            stats.hits += 1
            return e.weights
        }
        stats.misses += 1
        let bytes = source.reduce(0) { $0 + $1.byteCount }
        guard makeRoom(for: bytes) else {
            failure = failure ?? .invalidConfig(path: nil, field: "memory budget", reason: "layer \(layer) expert \(expert) needs \(bytes) bytes, "
                + "more than the \(capacity - pinnedBytes()) bytes of expert cache left beside the experts in use")
            return nil
        }
        let start = Date()
        var copies: [Tensor] = []
        for t in source {
            guard let copy = read(t, layer: layer, expert: expert) else { return nil }
            copies.append(copy)
        }
        stats.readSeconds += Date().timeIntervalSince(start)
        stats.bytesRead += bytes
        let e = Entry(weights: copies, bytes: bytes)
        e.pins = 1
        e.lastUse = clock
        e.uses = 1
        entries[key] = e
        held += bytes
        return copies
    }

    /// Unpins an entry `acquire` returned.
    public func release(layer: Int, expert: Int) {
        lock.withLock {
            if let e = entries[Key(layer: layer, expert: expert)] { e.pins = max(0, e.pins - 1) }
        }
    }

    private func pinnedBytes() -> Int { entries.values.reduce(0) { $0 + ($1.pins > 0 ? $1.bytes : 0) } }

    /// Evicts unpinned entries, lowest ranked first, until `bytes` more fit; false if they cannot.
    private func makeRoom(for bytes: Int) -> Bool {
        if held + bytes <= capacity { return true }
        let order = entries.filter { $0.value.pins == 0 }.sorted { a, b in
            switch policy {
            case .lru: return a.value.lastUse < b.value.lastUse
            case .lfu: return (a.value.uses, a.value.lastUse) < (b.value.uses, b.value.lastUse)
            }
        }
        for (key, e) in order where held + bytes > capacity {
            entries[key] = nil
            held -= e.bytes
            stats.evictions += 1
        }
        return held + bytes <= capacity
    }

    /// A copy of `t`'s bytes read from its file, or nil with the failure recorded.
    private func read(_ t: Tensor, layer: Int, expert: Int) -> Tensor? {
        guard let file = t.storage.mappedFile else {  // weights built in memory: copy them
            let copy = Tensor(uninitialized: t.shape, dtype: t.dtype)
            copy.mutableRawPointer.copyMemory(from: t.rawPointer, byteCount: t.byteCount)
            return copy
        }
        let what = "layer \(layer) expert \(expert)"
        let fd: Int32
        if let known = files[file.path] {
            fd = known
        } else {
            fd = open(file.path, O_RDONLY | O_CLOEXEC)
            if fd < 0 {
                failure = failure ?? .io(path: file.path, reason: "\(what): cannot open the file: \(String(cString: strerror(errno)))")
                return nil
            }
            files[file.path] = fd
        }
        let copy = Tensor(uninitialized: t.shape, dtype: t.dtype)
        var done = 0
        while done < t.byteCount {
            let n = pread(fd, copy.mutableRawPointer + done, t.byteCount - done, off_t(t.byteOffset + done))
            if n < 0 && errno == EINTR { continue }
            if n <= 0 {
                let reason = n < 0 ? String(cString: strerror(errno)) : "the file ends early (it changed or shrank under the model)"
                failure = failure ?? .io(path: file.path, reason: "\(what): read \(done) of \(t.byteCount) bytes at offset \(t.byteOffset): \(reason)")
                return nil
            }
            done += n
        }
        return copy
    }
}
