import MoE
import MoECore

// Dimension legend: d hidden size, h GRU state size d_r, E experts.

/// RMoE's router weights under the names of its reference code (qiuzh20/RMoE,
/// `llama_moe_modeling.py` and `rnn.py`): one GRU cell for the whole model,
/// `model.rnn_router.{weight,bias}_{ir,hr,iz,hz,in,hn}` ([h, h] and [h]), and per MoE layer
/// `<moe>.weight1` [h, d] and `<moe>.weight2` [E, h]. MoEKit reads them when config.json's
/// `moekit_router` names the `recurrent` router.
public enum RecurrentRouterWeights {
    /// Prefix of the shared cell's tensors.
    public static let cellPrefix = "model.rnn_router"
    /// The cell's gates, in PyTorch's `GRUCell` order (reset, update, new).
    public static let gates = ["r", "z", "n"]

    /// The input projection W1's name in the MoE block named `moePrefix`.
    public static func inputProjection(_ moePrefix: String) -> String { "\(moePrefix).weight1" }
    /// The output projection W2's name in the MoE block named `moePrefix`.
    public static func outputProjection(_ moePrefix: String) -> String { "\(moePrefix).weight2" }
    /// The name of one of the cell's twelve tensors: `kind` "weight" or "bias", `side` "i" (input)
    /// or "h" (state), `gate` one of `gates`.
    public static func cellTensor(_ kind: String, _ side: String, _ gate: String) -> String {
        "\(cellPrefix).\(kind)_\(side)\(gate)"
    }

    /// Loads the shared cell of state size `h`, packing the three gates as `GRUCell` wants them
    /// ([3h, h] weights, [3h] biases, widened to f32).
    static func loadCell(_ ck: any WeightSource, stateSize h: Int) throws(ModelError) -> GRUCell {
        func packed(_ kind: String, _ side: String, shape: [Int]) throws(ModelError) -> Tensor {
            var values: [Float] = []
            for g in gates { values += try ck.tensor(cellTensor(kind, side, g), shape: shape).toFloats() }
            return Tensor(shape: shape.count == 2 ? [3 * h, h] : [3 * h], values: values)
        }
        return GRUCell(weightIH: try packed("weight", "i", shape: [h, h]), weightHH: try packed("weight", "h", shape: [h, h]),
                       biasIH: try packed("bias", "i", shape: [h]), biasHH: try packed("bias", "h", shape: [h]))
    }
}
