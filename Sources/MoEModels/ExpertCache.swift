#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import MoE
import MoECore

/// Routed experts kept in memory under a byte budget, read on demand from the model's files.
///
/// Each entry is one expert of one layer (its gate, up and down weights, in their stored dtype),
/// read with `pread` from the file its tensors are mapped from, so the mapping itself is never
/// touched and the process holds only what the cache holds. When an entry must come in and
/// the cache is full, the entry the policy ranks lowest (and not in use by the running layer)
/// goes. A layer whose chosen experts do not fit at once runs them in groups that do
/// (`CachedExperts`). With `packBF16`, bf16 weights are held in the lossless packed form
/// (`PackedBF16Matrix`, about 78% of their bytes), so the budget holds more experts and a token
/// reads fewer bytes. The weights are the stored values, through the same arithmetic, so
/// outputs equal the resident model's exactly. Thread-safe; one layer runs at a time per model.
public final class ExpertCache: @unchecked Sendable {
    /// Which entry leaves when the cache is full.
    public enum Policy: String, Sendable, CaseIterable {
        /// Least recently used.
        case lru
        /// Least frequently used, ties by recency. An expert's count is of the layer passes that
        /// chose it, kept while it is out of the cache too (a hot expert evicted once comes
        /// back with its count, not as a newcomer the next miss evicts) and halved every
        /// `agingWindow` uses, so that experts hot long ago give way to those hot now.
        case lfu
    }

    /// What the cache has done since it was made (or `resetStatistics`).
    public struct Statistics: Sendable, Equatable {
        /// Expert uses served from memory, and those that had to read the file.
        public var hits = 0, misses = 0
        /// Bytes read from files, and seconds spent reading them (summed over reads, background
        /// ones included: reads in parallel add up to more than the time they took).
        public var bytesRead = 0
        public var readSeconds = 0.0
        /// Seconds layers waited for their experts (their own reads, or read-aheads not done
        /// yet): the time the computation stalled on the cache.
        public var stallSeconds = 0.0
        /// Page buffers mapped afresh for reads (the kernel zeroes each page on first touch); the
        /// other reads fill buffers evicted entries left.
        public var buffersMapped = 0
        /// Entries evicted.
        public var evictions = 0
        /// Experts read ahead of use (`prefetch`), and of those, the ones used before eviction.
        public var prefetches = 0, prefetchHits = 0
        /// Of the prefetched experts, the fraction used (0 when none were prefetched).
        public var prefetchAccuracy: Double { prefetches == 0 ? 0 : Double(prefetchHits) / Double(prefetches) }
        public init() {}
        /// Of hits and misses, the fraction that were hits (0 when there were none).
        public var hitRate: Double { hits + misses == 0 ? 0 : Double(hits) / Double(hits + misses) }
    }

    /// Most bytes of expert weights held at once.
    public let capacity: Int
    public let policy: Policy
    /// Whether reads bypass the page cache (`O_DIRECT`; `F_NOCACHE` on Darwin), so the kernel
    /// keeps no second copy of what the cache holds. A read covers whole 4 KiB blocks, so each
    /// tensor's pages hold up to 8 KiB more than its bytes; the budget counts them. Files whose
    /// system refuses direct reads are read through the page cache.
    public let directIO: Bool
    /// Whether bf16 weights (of rows a multiple of 32 long) are packed once read
    /// (`PackedBF16Matrix`), where that is faster (`PackedBF16Matrix.isFast`: AVX-512): an
    /// entry is read in its stored bytes, packed over them, and the pages its packed form leaves
    /// free go back to the system. Its bytes then count as packed.
    public let packBF16: Bool
    /// The lock, and the signal that an entry finished loading.
    private let cond = NSCondition()
    private var entries: [Key: Entry] = [:]
    private var held = 0, clock = 0
    /// Layer passes that chose each expert (held or not), halved every `agingWindow` of them:
    /// LFU's ranking.
    private var useCounts: [Key: Int] = [:]
    private var usesSinceAging = 0
    /// Of the packed weights read last, their packed bytes over their stored bytes (1 until one
    /// is read). Under the lock.
    private var packedShare = 1.0
    private var stats = Statistics()
    private var files: [String: Int32] = [:]
    /// Descriptors opened for direct reads, and the files whose system refuses them.
    private var directFiles: [String: Int32] = [:], directRefused = Set<String>()
    /// Page buffers of evicted entries, by size, for the next reads to fill again (a fresh
    /// mapping would page-fault and be zeroed by the kernel: a third of decode's CPU time with
    /// a 12 GB cache, when reads in flight dropped each other's buffers). Evicting makes room for
    /// an entry about to be read, which takes the buffers its eviction freed (`Entry.reserved`);
    /// the rest wait here, within the budget, and what goes beyond it is dropped.
    private var spare: [Int: [Buffer]] = [:]
    /// Buffers the last `makeRoom` freed, for the entry inserted next. Under the lock.
    private var freed: [Buffer] = []
    private var failure: ModelError?
    private let readers = DispatchQueue(label: "moekit.expert-cache.prefetch", attributes: .concurrent)

    struct Key: Hashable { let layer: Int, expert: Int }

    /// A page buffer an entry's weight was read into, and the bytes of memory it holds (less
    /// than its size once a packed weight handed its tail back).
    struct Buffer {
        let storage: TensorStorage
        let holds: Int
    }

    /// An expert's weights as the cache holds them: per weight, its copy in memory, or (for a
    /// weight held packed) the source it was read from, which gives its shape and is not to be
    /// read, with the packed copy in `packed`.
    public struct Weights: Sendable {
        public let tensors: [Tensor]
        public let packed: [PackedBF16Matrix?]
    }

    /// One expert's weights; `ready` once read. Entries being read are pinned, so never evicted.
    final class Entry: @unchecked Sendable {  // its fields change only under the cache's lock
        var weights = Weights(tensors: [], packed: [])
        /// The memory its weights take (pages included), the buffers to hand on when it goes.
        var buffers: [Buffer] = []
        /// Bytes counted against the capacity: its stored bytes while read, then what its
        /// (packed) weights hold.
        var bytes: Int
        var lastUse = 0, pins = 0
        var ready = false, prefetched = false
        /// Read ahead for a layer that chose it and runs it next (a miss read while the layer's
        /// other experts compute): its first use counts as that miss, not as a hit.
        var demanded = false
        /// Buffers its eviction of other entries freed, for its own read to fill.
        var reserved: [Buffer] = []
        init(bytes: Int) { self.bytes = bytes }
    }

    /// A cache of at most `capacity` bytes of expert weights.
    public init(capacity: Int, policy: Policy = .lru, directIO: Bool = false, packBF16: Bool = false) {
        precondition(capacity >= 0, "ExpertCache: negative capacity")
        self.capacity = capacity
        self.policy = policy
        self.directIO = directIO
        self.packBF16 = packBF16 && PackedBF16Matrix.isFast
    }

    deinit {
        for fd in files.values { close(fd) }
        for fd in directFiles.values { close(fd) }
    }

    /// The block size direct reads are aligned to.
    public static let directBlock = 4096

    /// The bytes an entry of `source`'s copies counts against the capacity, as stored (at most
    /// that once packed).
    public func entryBytes(_ source: [Tensor]) -> Int { source.reduce(0) { $0 + storageBytes($1) } }

    /// The bytes an entry of `source` is counted at while read: its stored bytes, or for weights
    /// to be packed the packed share of them the entries read last came to (`packedShare`), so
    /// that making room for it evicts about what it will hold. Its read holds the stored bytes
    /// for the moment it takes to pack them. Under the lock.
    private func reservedBytes(_ source: [Tensor]) -> Int {
        source.reduce(0) { total, t in
            let b = storageBytes(t)
            return total + (packBF16 && PackedBF16Matrix.canPack(t) ? min(b, Int((Double(b) * packedShare).rounded(.up))) : b)
        }
    }

    /// The bytes of memory a copy of `t` takes: its bytes, or with direct I/O the whole blocks
    /// of the file that hold them.
    func storageBytes(_ t: Tensor) -> Int {
        guard directIO, t.storage.mappedFile != nil else { return t.byteCount }
        let b = Self.directBlock, start = t.byteOffset / b * b
        return (t.byteOffset + t.byteCount + b - 1) / b * b - start
    }

    private func locked<T>(_ body: () -> T) -> T {
        cond.lock()
        defer { cond.unlock() }
        return body()
    }

    /// Per expert of `layer` (of `experts`): whether the cache holds it or is reading it.
    public func held(layer: Int, experts: Int) -> [Bool] {
        locked { (0..<experts).map { entries[Key(layer: layer, expert: $0)] != nil } }
    }

    /// Bytes held now (entries being read included).
    public var bytesHeld: Int { locked { held } }
    /// Entries held now.
    public var count: Int { locked { entries.count } }
    /// The counts so far.
    public var statistics: Statistics { locked { stats } }
    public func resetStatistics() { locked { stats = Statistics() } }

    /// The first read failure since the last call, cleared by this call. Outputs computed
    /// after a failure are not valid; `DecoderModel` checks this after every layer.
    public func takeFailure() -> ModelError? {
        locked {
            defer { failure = nil }
            return failure
        }
    }

    /// Expert `expert` of `layer`: `source` (weights mapped from a file) as copies in memory,
    /// read now when absent (outside the lock, so several threads read in parallel), waited
    /// for when a prefetch is reading it, and pinned until `release`; nil (with the failure
    /// recorded) when the file cannot be read or the entry cannot fit beside the pinned ones.
    public func acquire(layer: Int, expert: Int, source: [Tensor]) -> Weights? {
        let key = Key(layer: layer, expert: expert)
        let bytes = reservedBytes(source)
        cond.lock()
        clock += 1
        while true {
            if let e = entries[key] {
                e.pins += 1
                while !e.ready && entries[key] === e { cond.wait() }
                guard entries[key] === e else {  // its read failed: read it here, recording why
                    e.pins -= 1
                    continue
                }
                e.lastUse = clock
                countUse(key)
                if e.demanded {
                    e.demanded = false
                    stats.misses += 1
                } else {
                    stats.hits += 1
                }
                if e.prefetched {
                    stats.prefetchHits += 1
                    e.prefetched = false
                }
                cond.unlock()
                return e.weights
            }
            if makeRoom(for: bytes) { break }
            keepFreed()
            // Entries being read (a prefetch's, pinned until its read ends) free their room
            // when done: wait for them before calling the budget too small.
            if entries.values.contains(where: { $0.pins > 0 && !$0.ready }) {
                cond.wait()
                continue
            }
            stats.misses += 1
            failure = failure ?? .invalidConfig(path: sourcePath(source), field: "memory budget", reason: "layer \(layer) expert \(expert) needs \(bytes) bytes, "
                + "more than the \(capacity - pinnedBytes()) bytes of expert cache left beside the experts in use")
            cond.unlock()
            return nil
        }
        stats.misses += 1
        let e = insert(key, bytes: bytes)
        countUse(key)
        e.pins = 1
        cond.unlock()
        return load(e, key: key, source: source, recordFailure: true)
    }

    /// Starts reading expert `expert` of `layer` in the background, if it is neither held nor
    /// being read and fits without evicting a pinned entry, or one of layer `sparing` (the
    /// layer about to run, whose experts are not pinned yet); a later `acquire` finds it (or
    /// waits for it). Returns at once. With `demand`, the layer has chosen the expert and reads
    /// it while its other experts compute: counted as a miss when acquired, not as a read-ahead.
    public func prefetch(layer: Int, expert: Int, source: [Tensor], sparing: Int? = nil, demand: Bool = false) {
        let key = Key(layer: layer, expert: expert)
        let bytes = reservedBytes(source)
        cond.lock()
        guard entries[key] == nil, makeRoom(for: bytes, sparing: sparing, keepingReadAheads: !demand) else {
            keepFreed()
            cond.unlock()
            return
        }
        clock += 1
        let e = insert(key, bytes: bytes)
        e.pins = 1  // until read
        if demand {
            e.demanded = true
        } else {
            e.prefetched = true
            stats.prefetches += 1
        }
        cond.unlock()
        readers.async { _ = self.load(e, key: key, source: source, recordFailure: false, unpin: true) }
    }

    /// Uses between two halvings of LFU's counts: ten times the entries held (at least 64 uses),
    /// as TinyLFU resets its counts after ten times its cache's size.
    var agingWindow: Int { 10 * max(entries.count, 6) + 4 }

    /// Counts a layer pass that chose `key`, and halves every count once `agingWindow` uses
    /// have passed since the last halving (dropping those that reach 0). Under the lock.
    private func countUse(_ key: Key) {
        useCounts[key, default: 0] += 1
        usesSinceAging += 1
        guard usesSinceAging >= agingWindow else { return }
        usesSinceAging = 0
        useCounts = useCounts.compactMapValues { $0 > 1 ? $0 / 2 : nil }
    }

    /// Adds `seconds` a layer spent waiting for its experts to the statistics.
    public func recordStall(seconds: Double) { locked { stats.stallSeconds += seconds } }

    /// Unpins an entry `acquire` returned.
    public func release(layer: Int, expert: Int) {
        locked {
            if let e = entries[Key(layer: layer, expert: expert)] { e.pins = max(0, e.pins - 1) }
            cond.broadcast()  // room may have come free for a waiting `acquire`
        }
    }

    /// A new entry being read, counted against the capacity. Under the lock.
    private func insert(_ key: Key, bytes: Int) -> Entry {
        let e = Entry(bytes: bytes)
        (e.reserved, freed) = (freed, [])
        e.lastUse = clock
        entries[key] = e
        held += bytes
        return e
    }

    /// Reads `e`'s weights (outside the lock), then marks it ready (and with `unpin`, a
    /// prefetch's, drops the pin its read held, in the same step, so a waiter for room never
    /// sees it ready yet pinned) and wakes the waiters; on failure removes it (recording why,
    /// unless a prefetch) and returns nil.
    private func load(_ e: Entry, key: Key, source: [Tensor], recordFailure: Bool, unpin: Bool = false) -> Weights? {
        let start = Date()
        var tensors: [Tensor] = [], packed: [PackedBF16Matrix?] = [], buffers: [Buffer] = []
        var error: ModelError?
        var holds = 0, stored = 0, packable = 0, packedHolds = 0
        for t in source {
            switch read(t, for: e, layer: key.layer, expert: key.expert) {
            case let .success(copy):
                var bytes = storageBytes(t)
                stored += bytes
                if packBF16 && PackedBF16Matrix.canPack(copy) {
                    // Packed over the bytes just read; the pages past the packed rows go back.
                    let p = PackedBF16Matrix.packInPlace(copy)
                    packable += bytes
                    bytes = min(bytes, copy.storage.releasePages(after: p.byteCount))
                    packedHolds += bytes
                    tensors.append(t)
                    packed.append(p)
                } else {
                    tensors.append(copy)
                    packed.append(nil)
                }
                holds += bytes
                buffers.append(Buffer(storage: copy.storage, holds: bytes))
            case let .failure(why): error = why
            }
            if error != nil { break }
        }
        let seconds = Date().timeIntervalSince(start)
        cond.lock()
        defer {
            cond.broadcast()
            cond.unlock()
        }
        stats.readSeconds += seconds
        keepFreed(e.reserved)
        e.reserved = []
        if let error {
            if entries[key] === e {
                entries[key] = nil
                held -= e.bytes
            }
            if recordFailure { failure = failure ?? error }
            dropSpareBeyondBudget()
            return nil
        }
        stats.bytesRead += stored
        e.weights = Weights(tensors: tensors, packed: packed)
        e.buffers = buffers
        if packable > 0 { packedShare = Double(packedHolds) / Double(packable) }
        if entries[key] === e && holds != e.bytes {
            held += holds - e.bytes
            e.bytes = holds
            // Packed to more than reserved (rows that stayed raw): others make room.
            if held > capacity {
                _ = makeRoom(for: 0)
                keepFreed()
            }
        }
        e.ready = true
        if unpin { e.pins = max(0, e.pins - 1) }
        dropSpareBeyondBudget()
        return e.weights
    }

    /// Keeps `buffers` (by default those the last `makeRoom` freed, when no entry took them) as
    /// spares. Under the lock.
    private func keepFreed(_ buffers: [Buffer]? = nil) {
        for b in buffers ?? freed { spare[b.storage.byteCount, default: []].append(b) }
        if buffers == nil { freed = [] }
    }

    /// Unmaps spare buffers that, with the entries, would hold more than the capacity (spares
    /// an entry of another size left behind), counting the memory each holds: a packed weight's
    /// buffer, only its packed bytes. Under the lock.
    private func dropSpareBeyondBudget() {
        var spareBytes = spare.values.reduce(0) { $0 + $1.reduce(0) { $0 + $1.holds } }
        while held + spareBytes > capacity, let size = spare.first(where: { !$0.value.isEmpty })?.key {
            spareBytes -= spare[size]?.removeLast().holds ?? 0
        }
    }

    private func pinnedBytes() -> Int { entries.values.reduce(0) { $0 + ($1.pins > 0 ? $1.bytes : 0) } }

    /// Evicts unpinned entries (none of layer `sparing`, and with `keepingReadAheads` none read
    /// ahead and not used yet), lowest ranked first, until `bytes` more fit; false if they
    /// cannot, and then, when sparing a layer (a prefetch), evicts nothing. A read-ahead never
    /// evicts another: under LFU an unused one ranks by its history alone, often lowest, and
    /// the next read-ahead would evict it before its layer ran (10% of them were used, with
    /// 172 MB read a token, on the 35 GB model of the README). Under the lock.
    private func makeRoom(for bytes: Int, sparing: Int? = nil, keepingReadAheads: Bool = false) -> Bool {
        if held + bytes <= capacity { return true }
        let candidates = entries.filter {
            $0.value.pins == 0 && $0.key.layer != sparing && !(keepingReadAheads && $0.value.prefetched)
        }
        if sparing != nil && held - candidates.reduce(0, { $0 + $1.value.bytes }) + bytes > capacity { return false }
        let order = candidates.sorted { a, b in
            switch policy {
            case .lru: return a.value.lastUse < b.value.lastUse
            case .lfu: return (useCounts[a.key] ?? 0, a.value.lastUse) < (useCounts[b.key] ?? 0, b.value.lastUse)
            }
        }
        for (key, e) in order where held + bytes > capacity {
            entries[key] = nil
            held -= e.bytes
            stats.evictions += 1
            freed += e.buffers
        }
        return held + bytes <= capacity
    }

    /// The file `source` is read from (for errors), or a placeholder for weights in memory.
    private func sourcePath(_ source: [Tensor]) -> String { source.first?.storage.mappedFile?.path ?? "(weights in memory)" }

    /// A page buffer of exactly `bytes` for `e`'s read: one its own eviction freed, else a
    /// spare, else fresh pages (nil when the kernel refuses them).
    private func buffer(_ bytes: Int, for e: Entry) -> TensorStorage? {
        let reused: TensorStorage? = locked {
            if let i = e.reserved.firstIndex(where: { $0.storage.byteCount == bytes }) { return e.reserved.remove(at: i).storage }
            if let b = spare[bytes]?.popLast() { return b.storage }
            stats.buffersMapped += 1
            return nil
        }
        return reused ?? TensorStorage(pagesFor: bytes)
    }

    /// The descriptor of `path`, opened once; or why it cannot be opened.
    private func descriptor(_ path: String) -> (fd: Int32, error: String?) {
        locked {
            if let known = files[path] { return (known, nil) }
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            if fd < 0 { return (fd, "cannot open the file: \(String(cString: strerror(errno)))") }
            files[path] = fd
            return (fd, nil)
        }
    }

    /// A copy of `t`'s bytes, read from its file with `pread` (or copied, for weights built in
    /// memory). Outside the lock.
    private func read(_ t: Tensor, for e: Entry, layer: Int, expert: Int) -> Result<Tensor, ModelError> {
        guard let file = t.storage.mappedFile else {
            let copy = Tensor(uninitialized: t.shape, dtype: t.dtype)
            copy.mutableRawPointer.copyMemory(from: t.rawPointer, byteCount: t.byteCount)
            return .success(copy)
        }
        let what = "layer \(layer) expert \(expert)"
        if directIO, let fd = directDescriptor(file.path) {
            if let copy = readDirect(t, for: e, fd: fd, path: file.path, what: what) { return copy }
        }
        let (fd, error) = descriptor(file.path)
        if let error { return .failure(.io(path: file.path, reason: "\(what): \(error)")) }
        // Pages of its own (an evicted entry's, or fresh), unmapped when dropped: the process
        // keeps no freed copy behind.
        guard let pages = buffer(t.byteCount, for: e) else {
            return .failure(.io(path: file.path, reason: "\(what): cannot map \(t.byteCount) bytes of memory: \(String(cString: strerror(errno)))"))
        }
        let copy = Tensor(storage: pages, byteOffset: 0, shape: t.shape, dtype: t.dtype)
        var done = 0
        while done < t.byteCount {
            let n = pread(fd, copy.mutableRawPointer + done, t.byteCount - done, off_t(t.byteOffset + done))
            if n < 0 && errno == EINTR { continue }
            if n <= 0 {
                let reason = n < 0 ? String(cString: strerror(errno)) : "the file ends early (it changed or shrank under the model)"
                return .failure(.io(path: file.path, reason: "\(what): read \(done) of \(t.byteCount) bytes at offset \(t.byteOffset): \(reason)"))
            }
            done += n
        }
        return .success(copy)
    }

    /// A descriptor of `path` for direct reads, opened once; nil when the system refuses them.
    private func directDescriptor(_ path: String) -> Int32? {
        locked {
            if directRefused.contains(path) { return nil }
            if let known = directFiles[path] { return known }
            #if os(Linux) && arch(x86_64)
            let fd = open(path, O_RDONLY | O_CLOEXEC | 0o40000)  // O_DIRECT
            #elseif os(Linux) && arch(arm64)
            let fd = open(path, O_RDONLY | O_CLOEXEC | 0o200000)  // O_DIRECT
            #elseif canImport(Darwin)
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            if fd >= 0 { _ = fcntl(fd, F_NOCACHE, 1) }
            #else
            let fd: Int32 = -1
            #endif
            guard fd >= 0 else {
                directRefused.insert(path)
                return nil
            }
            directFiles[path] = fd
            return fd
        }
    }

    /// `t` read with direct I/O: the whole blocks that hold it, into block-aligned pages, the
    /// copy a view at its offset within them. nil when the system refuses the read (`EINVAL`:
    /// the file is then read through the page cache from now on); a failed read is a typed
    /// error, as for a buffered one.
    private func readDirect(_ t: Tensor, for e: Entry, fd: Int32, path: String, what: String) -> Result<Tensor, ModelError>? {
        let b = Self.directBlock, start = t.byteOffset / b * b, size = storageBytes(t)
        guard let pages = buffer(size, for: e) else {
            return .failure(.io(path: path, reason: "\(what): cannot map \(size) bytes of memory: \(String(cString: strerror(errno)))"))
        }
        let needed = t.byteOffset + t.byteCount - start  // the last block may run past the end of the file
        var done = 0
        while done < needed {
            let n = pread(fd, pages.base + done, size - done, off_t(start + done))
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == EINVAL && done == 0 {
                locked { _ = directRefused.insert(path) }
                return nil
            }
            if n <= 0 {
                let reason = n < 0 ? String(cString: strerror(errno)) : "the file ends early (it changed or shrank under the model)"
                return .failure(.io(path: path, reason: "\(what): read \(done) of \(needed) bytes at offset \(start): \(reason)"))
            }
            done += n
        }
        return .success(Tensor(storage: pages, byteOffset: t.byteOffset - start, shape: t.shape, dtype: t.dtype))
    }
}
