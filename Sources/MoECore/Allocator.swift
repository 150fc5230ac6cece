import _MoEKernels

/// Process-wide allocator settings for workloads that free and reallocate the same large
/// buffers over and over (training steps).
public enum Allocator {
    /// Keeps freed memory in the process for reuse. glibc serves blocks over 128 KiB with fresh
    /// mmaps, so without this every training step page-faults and the kernel zeroes each page
    /// again. Process-wide: an application opts in; the library never does it on its own.
    /// Returns whether the allocator supports it (glibc does).
    @discardableResult
    public static func retainFreedMemory() -> Bool { moek_retain_freed_memory() != 0 }
}
