"""Peak memory: streaming MIR over 10x more tokens than the naive "keep every token" approach fits.

The naive approach (the official code's) concatenates every token of a layer before computing
statistics, so its memory grows with N. Here both run in fresh subprocesses and their peak RSS
is read from getrusage: the naive one on the largest token count that fits a memory budget, the
streaming accumulator on 10x as many tokens, fed in batches.

    python benchmarks/bench_streaming_memory.py [--dim 512] [--budget-mib 512] [--factor 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys, time, torch
from modalign.metrics import MIRAccumulator, compute_mir
mode, d, n_vision, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
n_text = n_vision // 4
g = torch.Generator().manual_seed(0)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
if mode == "naive":
    vision = torch.randn(n_vision, d, generator=g) + 1.0       # every token kept, float32
    text = torch.randn(n_text, d, generator=g)
    res = compute_mir([vision], [text])
else:
    acc = MIRAccumulator(1)
    tb = max(1, batch // 4)
    def feed(acc):  # one whole pass; accumulate() feeds again if outliers overflow the tails
        g.manual_seed(0)  # a stream that can be replayed, as a dataset can
        for s in range(0, n_vision, batch):
            v = torch.randn(min(batch, n_vision - s), d, generator=g) + 1.0
            t = torch.randn(min(tb, max(0, n_text - s // 4)), d, generator=g)
            acc.update([v], [t])
    res = acc.accumulate(feed)
    passes = acc.passes
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"mode": mode, "n_vision": n_vision, "n_text": n_text, "d": d, "mir": res.mir,
                  "peak_mib": peak / 1024, "base_mib": base / 1024,
                  "seconds": time.perf_counter() - t0,
                  "passes": passes if mode == "stream" else 1}))
"""


def _run(mode: str, d: int, n: int, batch: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(d), str(n), str(batch)],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise RuntimeError(f"{mode} run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dim", type=int, default=512)
    p.add_argument(
        "--budget-mib", type=int, default=512, help="memory the naive token store may use"
    )
    p.add_argument("--factor", type=int, default=10)
    p.add_argument("--batch", type=int, default=4096, help="tokens per streamed batch")
    args = p.parse_args()
    bytes_per_token = args.dim * 4 * 1.25  # vision + a quarter as many text tokens, float32
    n_fit = int(args.budget_mib * 2**20 / bytes_per_token)
    t0 = time.perf_counter()
    naive = _run("naive", args.dim, n_fit, args.batch)
    stream = _run("stream", args.dim, n_fit * args.factor, args.batch)
    for r in (naive, stream):
        print(
            f"{r['mode']:7s} d={r['d']} vision tokens={r['n_vision']:>9,} text tokens={r['n_text']:>8,} "
            f"peak RSS={r['peak_mib']:8.1f} MiB (interpreter+torch {r['base_mib']:.0f} MiB) "
            f"time={r['seconds']:.1f}s passes={r['passes']} MIR={r['mir']:.4f}"
        )
    print(
        f"streaming fed {args.factor}x the tokens with "
        f"{stream['peak_mib'] / naive['peak_mib']:.2f}x the naive peak memory "
        f"(naive would need ~{args.factor * args.budget_mib} MiB for that many tokens); "
        f"total {time.perf_counter() - t0:.0f}s"
    )


if __name__ == "__main__":
    main()
