"""VLSA connectors at real size: time and image tokens of mlp2x_gelu (low res), tiled and the
SA-Perceiver (local and global scope), forward + backward on CLIP-L/336 features (576 x 1024 per
view, 2 x 2 tiles) into a 4096-wide LLM.

    python benchmarks/bench_vlsa.py --images 2 --repeats 3 --threads 2 --json benchmarks/results/vlsa_cpu.json

Only the connector is timed (the tower encodes 5 views instead of 1 for every tiled variant, and
the LLM's cost grows with the image tokens it is given: those are reported, not timed here).
Ratios are against mlp2x_gelu on the low-res view, from the same invocation.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

VARIANTS = {  # name -> (connector spec, views per image fed to it)
    "lowres_mlp2x_gelu": ("mlp2x_gelu", 1),
    "tiled_2x2": ("tiled", 5),
    "sa_perceiver_local": ("sa_perceiver", 5),
    "sa_perceiver_global": ("sa_perceiver:scope=global", 5),
    "sa_perceiver_literal": ("sa_perceiver:attention=silu_literal,kv=shared", 5),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from modalign.methods.connectors import build_connector

    rows = {}
    for name, (spec, views) in VARIANTS.items():
        connector = build_connector(spec, 1024, 4096, 576, seed=0)
        features = torch.randn(args.images * views, 576, 1024)
        times = []
        for _ in range(args.repeats + 1):  # the first run warms up
            t = time.perf_counter()
            out = connector(features)
            out.float().square().mean().backward()
            times.append(time.perf_counter() - t)
            connector.zero_grad(set_to_none=True)
        best = min(times[1:])
        params = sum(p.numel() for p in connector.parameters())
        rows[name] = {"spec": spec, "s": round(best, 4), "image_tokens": out.shape[1],
                      "params": params}  # fmt: skip
    base = rows["lowres_mlp2x_gelu"]["s"]
    print(f"{'variant':24s} {'s/fwd+bwd':>10s} {'ratio':>7s} {'tokens':>7s} {'params':>11s}")
    for name, r in rows.items():
        r["ratio"] = round(r["s"] / base, 2)
        print(
            f"{name:24s} {r['s']:10.3f} {r['ratio']:7.2f} {r['image_tokens']:7d} {r['params']:11,d}"
        )
    if args.json:
        record = {"images": args.images, "threads": args.threads, "repeats": args.repeats,
                  "rows": rows}  # fmt: skip
        args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
