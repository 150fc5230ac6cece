import Foundation
import MoECore

/// GPT-OSS's experts as OpenAI publishes them, in MXFP4: `experts.gate_up_proj_blocks`
/// [E, 2I, d/32, 16] and `down_proj_blocks` [E, d, I/32, 16] (uint8, two values per byte, the
/// low nibble first; gate and up rows interleaved) with `*_scales` [E, rows, K/32] (e8m0).
/// Asked for an expert's `gate_proj`, `up_proj` or `down_proj` weight, the checkpoint answers
/// with that expert's rows repacked into ggml's MXFP4 blocks (the scale byte, then value j in
/// the low nibble and value j + 16 in the high nibble of byte j): a copy at the stored 4.25
/// bits per value, which the MXFP4 leaves then read. transformers' `convert_moe_packed_tensors`
/// defines the values (Tests/Fixtures/gpt_oss_mxfp4, scripts/make_mxfp4_fixture.py).
extension Checkpoint {
    /// The packed tensors and the rows of them that make the expert weight `name`, if the
    /// checkpoint stores it in MXFP4.
    func mxfp4Source(_ name: String) -> (blocks: String, scales: String, expert: Int, rowStart: Int, rowStep: Int)? {
        // model.layers.N.mlp.experts.X.{gate,up,down}_proj.weight
        let parts = name.split(separator: ".")
        guard parts.count == 8, parts[4] == "experts", parts[7] == "weight", let expert = Int(parts[5]) else { return nil }
        let prefix = parts[0..<5].joined(separator: ".")
        let (stem, start, step): (String, Int, Int)
        switch parts[6] {
        case "gate_proj": (stem, start, step) = ("gate_up_proj", 0, 2)
        case "up_proj": (stem, start, step) = ("gate_up_proj", 1, 2)
        case "down_proj": (stem, start, step) = ("down_proj", 0, 1)
        default: return nil
        }
        let blocks = "\(prefix).\(stem)_blocks", scales = "\(prefix).\(stem)_scales"
        guard files[blocks] != nil, files[scales] != nil else { return nil }
        return (blocks, scales, expert, start, step)
    }

    /// The expert weight `name` from MXFP4 blocks, as a ggml MXFP4 tensor [rows, K].
    func mxfp4Tensor(_ name: String, shape: [Int]?) throws(ModelError) -> Tensor? {
        guard let src = mxfp4Source(name), let bf = files[src.blocks], let sf = files[src.scales],
              let be = bf.entries[src.blocks], let se = sf.entries[src.scales] else { return nil }
        guard be.dtypeName == "U8", se.dtypeName == "U8" else {
            throw .unsupportedDType(path: bf.path, name: src.blocks, dtype: "\(be.dtypeName) (MXFP4 blocks and scales are U8)")
        }
        guard be.shape.count == 4, be.shape[3] == 16, se.shape == Array(be.shape.prefix(3)), src.expert < be.shape[0],
              be.shape[1] % src.rowStep == 0 else {
            throw .wrongShape(path: bf.path, name: src.blocks, expected: [src.expert + 1, -1, -1, 16], found: be.shape)
        }
        let (rowsAll, groups) = (be.shape[1], be.shape[2])
        let rows = rowsAll / src.rowStep, k = groups * 32
        if let shape, shape != [rows, k] { throw .wrongShape(path: bf.path, name: name, expected: shape, found: [rows, k]) }
        let blocks = try bf.bytes(src.blocks), scales = try sf.bytes(src.scales)
        let out = Tensor(uninitialized: [rows, k], dtype: .mxfp4)
        let dst = out.mutableRawPointer.assumingMemoryBound(to: UInt8.self)
        for r in 0..<rows {
            let row = src.expert * rowsAll + src.rowStart + r * src.rowStep
            for g in 0..<groups {
                let b = blocks.baseAddress! + (row * groups + g) * 16, o = dst + (r * groups + g) * 17
                o[0] = scales[row * groups + g]
                for j in 0..<16 {  // value v lives in byte v / 2, nibble v % 2
                    let lo = (b[j / 2] >> (4 * UInt8(j % 2))) & 0xF, hi = (b[(j + 16) / 2] >> (4 * UInt8(j % 2))) & 0xF
                    o[1 + j] = lo | hi << 4
                }
            }
        }
        return out
    }
}

extension SafetensorsFile {
    /// The raw bytes of tensor `name` (any dtype), a view of the mapped file.
    func bytes(_ name: String) throws(ModelError) -> UnsafeBufferPointer<UInt8> {
        guard let e = entries[name] else { throw .missingTensor(path: path, name: name) }
        guard e.begin >= 0, e.end >= e.begin, e.end <= file.byteCount else {
            throw .invalidFile(path: path, field: name, reason: "its data lies outside the file")
        }
        return UnsafeBufferPointer(start: file.base.advanced(by: e.begin).assumingMemoryBound(to: UInt8.self), count: e.end - e.begin)
    }
}
