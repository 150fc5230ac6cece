#!/usr/bin/env python3
"""Compares two `moe logits` outputs: same shape, every logit within TOL x max(1, |want|).

    scripts/compare-logits.py WANT.json GOT.json TOL

Exits non-zero, naming the first logit that differs, when they do not agree."""
import json
import sys

want_path, got_path, tol = sys.argv[1], sys.argv[2], float(sys.argv[3])
want, got = (json.load(open(p))["logits"] for p in (want_path, got_path))
assert len(want) == len(got), f"{got_path}: {len(got)} rows of logits, {len(want)} expected"
worst = 0.0
for r, (a, b) in enumerate(zip(want, got)):
    assert len(a) == len(b), f"{got_path}: row {r} has {len(b)} logits, {len(a)} expected"
    for i, (x, y) in enumerate(zip(a, b)):
        err = abs(x - y) / max(1.0, abs(x))
        if err > tol:
            sys.exit(f"FAIL {got_path}: logit [{r}][{i}] is {y}, {x} expected (relative {err:.2e} > {tol})")
        worst = max(worst, err)
print(f"{got_path}: every logit within {worst:.1e} of {want_path} (tolerance {tol})")
