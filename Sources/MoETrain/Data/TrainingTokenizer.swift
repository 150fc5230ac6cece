import Foundation
import MoEModels

/// The tokenizer a training run encodes its text with: the byte tokenizer for a model trained
/// from scratch, or a checkpoint's own `tokenizer.json` for `moe train --from`.
public protocol TrainingTokenizer: Sendable {
    /// The ids of `text`, with no special tokens.
    func encode(_ text: String) -> [Int]
    /// The text of `ids`, special tokens dropped.
    func decode(_ ids: [Int]) -> String
    /// The id a sequence starts with, if the model has one.
    var bosID: Int? { get }
    /// The id that ends a sequence (pads a short text window; stops a completion), if any.
    var eosID: Int? { get }
    /// One past the largest id `encode` can give.
    var idBound: Int { get }
}

extension TrainingTokenizer {
    /// `encode(_:)` with `bosID` in front when `bos` (and there is one).
    public func encode(_ text: String, bos: Bool) -> [Int] { (bos ? bosID.map { [$0] } ?? [] : []) + encode(text) }
}

extension ByteTokenizer: TrainingTokenizer {
    public func encode(_ text: String) -> [Int] { encode(text, bos: false) }
    public var bosID: Int? { Self.bos }
    public var eosID: Int? { Self.eos }
    public var idBound: Int { Self.vocabularySize }
}

/// A checkpoint's `tokenizer.json` with the special ids its config.json names.
public struct CheckpointTokenizer: TrainingTokenizer, @unchecked Sendable {
    public let tokenizer: Tokenizer
    public let bosID: Int?, eosID: Int?

    /// The tokenizer of the checkpoint folder `directory` (its `tokenizer.json`) or of a GGUF
    /// file, with BOS and EOS from `spec`.
    public init(directory: String, spec: DecoderSpec) throws(ModelError) {
        try self.init(tokenizer: Tokenizer.of(model: directory), spec: spec)
    }

    /// `tokenizer` (a GGUF file's, say), with BOS and EOS from `spec`.
    public init(tokenizer: Tokenizer, spec: DecoderSpec) {
        self.tokenizer = tokenizer
        bosID = spec.bosTokenID
        eosID = spec.eosTokenIDs.first
    }

    public var idBound: Int { tokenizer.idBound }
    public func encode(_ text: String) -> [Int] { tokenizer.encode(text, addSpecialTokens: false) }
    public func decode(_ ids: [Int]) -> String { tokenizer.decode(ids, skipSpecialTokens: true) }
}
