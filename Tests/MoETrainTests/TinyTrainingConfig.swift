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

/// `tinyTrainingConfig` (4 experts of 24, sequences of 12) with every auxiliary loss the router
/// takes switched on, for checking sharded steps against whole ones.
func auxLossTrainingConfig(router: String, dataParallel: Bool) -> TrainingConfig {
    var c = tinyTrainingConfig(router: router, experts: 4, expertSize: 24, seqLen: 12)
    c.dataParallel = dataParallel
    c.loadBalance = 0.05
    c.zLoss = 0.01
    c.entropyLoss = router == "top-p" ? 0.02 : 0
    c.expertBalance = router == "topk-sigmoid" ? 0.03 : 0
    c.deviceBalance = router == "topk-sigmoid" ? 0.02 : 0
    if router == "top-p" { c.router.p = 0.6 }
    if router == "null-experts" { c.router.nullExperts = 2 }
    return c
}
