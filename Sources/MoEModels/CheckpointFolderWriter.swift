import Foundation
import MoECore

/// Writes a checkpoint folder whole or not at all: its files go into a temporary folder beside
/// `out`, the source's tokenizer and generation files are copied in, and the folder is renamed
/// into place; on any failure the temporary folder is removed and `out` is untouched.
public enum CheckpointFolderWriter {
    /// Files beside the weights copied as they are.
    static let companionFiles = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                                 "tokenizer.model", "chat_template.jinja"]

    /// Creates `out` from `source`'s folder: `body` writes the weights and config into the
    /// temporary folder it is given. Refuses an `out` that exists.
    public static func write(out: String, copyingFrom source: String, _ body: (String) throws(ModelError) -> Void) throws(ModelError) {
        guard !FileManager.default.fileExists(atPath: out) else { throw .io(path: out, reason: "already exists; not overwritten") }
        let temporary = out + ".tmp-\(getpid())"
        try? FileManager.default.removeItem(atPath: temporary)
        do {
            try FileManager.default.createDirectory(atPath: temporary, withIntermediateDirectories: true)
        } catch {
            throw .io(path: out, reason: "cannot create: \(systemReason(error))")
        }
        do throws(ModelError) {
            try body(temporary)
            for file in companionFiles {
                let from = (source as NSString).appendingPathComponent(file)
                if FileManager.default.fileExists(atPath: from) {
                    do { try FileManager.default.copyItem(atPath: from, toPath: (temporary as NSString).appendingPathComponent(file)) } catch {
                        throw ModelError.io(path: from, reason: "cannot copy: \(systemReason(error))")
                    }
                }
            }
            guard rename(temporary, out) == 0 else { throw ModelError.io(path: out, reason: "cannot rename into place: \(String(cString: strerror(errno)))") }
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            throw error
        }
    }
}
