"""KID on token sets of a model run's size: whole kernel matrices once (the package's path)
against one MMD per subset (the reference path, torchmetrics' algorithm). Prints seconds, the
ratio and the largest relative difference.

    python benchmarks/bench_baselines.py [--nv 900] [--nt 2048] [--d 128] [--threads 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import modalign.metrics.baselines as baselines


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--nv", type=int, default=900)
    p.add_argument("--nt", type=int, default=2048)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--subsets", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.nv, args.d, generator=g) + 0.3  # (n_v, d)
    y = torch.randn(args.nt, args.d, generator=g)  # (n_t, d)
    size = min(1000, args.nv, args.nt)
    t = time.perf_counter()
    fast = baselines.kid(x, y, subsets=args.subsets, subset_size=size)
    t_fast = time.perf_counter() - t
    limit, baselines.GRAM_LIMIT = baselines.GRAM_LIMIT, 0  # force the per-subset path
    t = time.perf_counter()
    ref = baselines.kid(x, y, subsets=args.subsets, subset_size=size)
    t_ref = time.perf_counter() - t
    baselines.GRAM_LIMIT = limit
    out = {
        "shape": [args.nv, args.nt, args.d], "subsets": args.subsets, "subset_size": size,
        "threads": args.threads, "kid_s": round(t_fast, 3), "reference_s": round(t_ref, 3),
        "speedup": round(t_ref / t_fast, 1),
        "max_rel_diff": max(abs(a - b) / abs(b) for a, b in zip(fast, ref, strict=True)),
    }  # fmt: skip
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
