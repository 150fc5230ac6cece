import Foundation

/// An error from MoECore: bad input from outside the process, named by file and field.
///
/// Every case renders a message a user can act on (`description`), naming the file (when there
/// is one) and the field or value at fault.
public enum MoECoreError: Error, Equatable, CustomStringConvertible {
    /// A file could not be opened, read or mapped. `reason` is the system's word for it.
    case io(path: String, reason: String)
    /// A view or read would reach past the end of a file or buffer.
    case outOfBounds(path: String, field: String, needed: Int, available: Int)
    /// A value is not allowed (a negative dimension, an unknown dtype name, ...).
    case invalidValue(path: String?, field: String, reason: String)

    public var description: String {
        switch self {
        case let .io(path, reason):
            return "\(path): \(reason)"
        case let .outOfBounds(path, field, needed, available):
            return "\(path): \(field) needs bytes up to \(needed) but only \(available) are there"
        case let .invalidValue(path, field, reason):
            return (path.map { "\($0): " } ?? "") + "\(field): \(reason)"
        }
    }
}

/// The system's word for a failed file operation: the POSIX message ("No such file or
/// directory", "Permission denied") where Foundation's error carries one or maps to one, rather
/// than "The operation could not be completed".
public func systemReason(_ error: any Error) -> String {
    let ns = error as NSError
    if ns.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(ns.code))) }
    // (On Linux the underlying error may be stored as a Swift error rather than an NSError.)
    if let underlying = ns.userInfo[NSUnderlyingErrorKey].flatMap({ $0 as? any Error }).map({ $0 as NSError }),
       underlying.domain == NSPOSIXErrorDomain {
        return String(cString: strerror(Int32(underlying.code)))
    }
    switch CocoaError.Code(rawValue: ns.code) {
    case .fileNoSuchFile, .fileReadNoSuchFile: return String(cString: strerror(ENOENT))
    case .fileReadNoPermission, .fileWriteNoPermission: return String(cString: strerror(EACCES))
    case .fileWriteOutOfSpace: return String(cString: strerror(ENOSPC))
    case .fileWriteFileExists: return String(cString: strerror(EEXIST))
    case .fileWriteVolumeReadOnly: return String(cString: strerror(EROFS))
    default: return ns.localizedDescription
    }
}
