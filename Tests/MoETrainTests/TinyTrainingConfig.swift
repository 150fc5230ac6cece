import MoE
import MoETrain

/// A training config for a model small enough for debug-build tests: hidden 16, 2 layers of 2
/// heads (1 KV head), `experts` experts of `expertSize`, top-2 with `router`, batch 4.
func tinyTrainingConfig(router: String, experts: Int, expertSize: Int, seqLen: Int) -> TrainingConfig {
    var c = TrainingConfig()
    c.model.hiddenSize = 16
    c.model.layers = 2
    c.model.heads = 2
    c.model.kvHeads = 1
    c.model.experts = experts
    c.model.expertSize = expertSize
    c.router = RouterConfig(name: router)
    c.router.k = 2
    c.batch = 4
    c.seqLen = seqLen
    return c
}
