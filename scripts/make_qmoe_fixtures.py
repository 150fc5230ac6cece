#!/usr/bin/env python3
"""QMoE fixtures: GPTQ onto the ternary grid {lo, 0, hi}, as numpy computes it in float64.

Writes Tests/Fixtures/qmoe/gptq.json: small weight matrices W [N, K] with the Hessian
H = X^T X of inputs X (correlated, as a layer's inputs are), and for each the grid (lo, hi as
f16 values) and the ternary values GPTQ chooses (GPTQ's `fasterquant`: dead columns zeroed,
1% dampening, H^-1's upper Cholesky factor, lazy batch updates of `blocksize` columns), under
both grids (`minmax` and `mse`), plus the values rounding to nearest would choose; and on the
`minmax` grid with a dead zone of 0.7 (a weight is 0 unless it passes 0.7 of hi or of lo).

    python3 scripts/make_qmoe_fixtures.py
"""
import json
import os

import numpy as np


def f16(x):
    return np.asarray(x, dtype=np.float16).astype(np.float64)


DEAD_ZONE = np.float32(0.7)


def nearest(x, lo, hi, zone=0.5):
    """-1, 0, 1 for x on lo, 0, hi: 1 past zone * hi, -1 past zone * lo, else 0 (zone 0.5: the
    nearest point, a tie to 0). The arithmetic is in x's type, as the Swift code's."""
    z = x.dtype.type(zone)
    t = np.zeros(x.shape, dtype=np.int64)
    t[(x > 0) & (hi > 0) & (x - hi * z > 0)] = 1
    t[(x <= 0) & (lo < 0) & (x - lo * z < 0)] = -1
    return t


def grid(W, kind):
    lo = np.minimum(W.min(axis=1), 0).astype(np.float32)
    hi = np.maximum(W.max(axis=1), 0).astype(np.float32)
    if kind == "mse":
        for r in range(W.shape[0]):
            best, bf = np.inf, np.float32(1)
            for i in range(17):  # f = 1, 0.95, ..., 0.2
                f = np.float32(np.float32(1) - np.float32(i) * np.float32(0.05))
                l, h = lo[r] * f, hi[r] * f
                x = W[r].astype(np.float32)
                t = nearest(x, l, h)
                q = np.where(t > 0, h, np.where(t < 0, l, np.float32(0))).astype(np.float32)
                err = np.float32(0)
                for v in (x - q):  # f32 in order, as the Swift grid search adds
                    err = np.float32(err + np.float32(v * v))
                if err < best:
                    best, bf = err, f
            lo[r] *= bf
            hi[r] *= bf
    return f16(lo), f16(hi)


def gptq(W, H, lo, hi, blocksize, percdamp=0.01, zone=0.5):
    W = W.astype(np.float64).copy()
    H = H.astype(np.float64).copy()
    n, k = W.shape
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += percdamp * np.mean(np.diag(H)) * np.eye(k)
    L = np.linalg.cholesky(H)
    Linv = np.linalg.inv(L)
    U = np.linalg.cholesky(Linv.T @ Linv).T
    Q = np.zeros((n, k), dtype=np.int64)
    for i1 in range(0, k, blocksize):
        i2 = min(i1 + blocksize, k)
        Err = np.zeros((n, i2 - i1))
        for i in range(i1, i2):
            w = W[:, i]
            t = nearest(w, lo, hi, np.float64(zone))
            Q[:, i] = t
            q = np.where(t > 0, hi, np.where(t < 0, lo, 0.0))
            e = (w - q) / U[i, i]
            W[:, i:i2] -= np.outer(e, U[i, i:i2])
            Err[:, i - i1] = e
        W[:, i2:] -= Err @ U[i1:i2, i2:]
    return Q


def main():
    rng = np.random.default_rng(20261204)
    cases = []
    for (n, k, tokens, block) in [(6, 32, 200, 8), (10, 48, 300, 16), (8, 64, 100, 128)]:
        W = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
        W[rng.integers(0, n), rng.integers(0, k)] = 0.4  # an outlier, as trained weights have
        mix = rng.standard_normal((k, k)) * 0.3 + np.eye(k)
        X = (rng.standard_normal((tokens, k)) @ mix).astype(np.float32)
        X[:, 3] = 0  # a dead input column
        H = X.astype(np.float64).T @ X.astype(np.float64)
        case = {"rows": n, "cols": k, "block": block, "weight": W.flatten().tolist(), "hessian": H.flatten().tolist()}
        for kind in ("minmax", "mse"):
            lo, hi = grid(W, kind)
            case[kind] = {"lo": lo.tolist(), "hi": hi.tolist(),
                          "gptq": gptq(W, H, lo, hi, block).flatten().tolist(),
                          "nearest": nearest(W.astype(np.float64), lo[:, None], hi[:, None]).flatten().tolist()}
        lo, hi = grid(W, "minmax")
        lo32, hi32 = lo.astype(np.float32)[:, None], hi.astype(np.float32)[:, None]
        case["deadzone"] = {"zone": float(DEAD_ZONE), "lo": lo.tolist(), "hi": hi.tolist(),
                            "gptq": gptq(W, H, lo, hi, block, zone=DEAD_ZONE).flatten().tolist(),
                            "nearest": nearest(W.astype(np.float32), lo32, hi32, DEAD_ZONE).flatten().tolist()}
        cases.append(case)
    out = os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures", "qmoe")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "gptq.json"), "w") as f:
        json.dump({"cases": cases}, f)
        f.write("\n")


if __name__ == "__main__":
    main()
