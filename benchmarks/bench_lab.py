"""Wall time of the lab: each stage of the cycle, the whole cycle, and MIR of the embedded default.

    python benchmarks/bench_lab.py --out /tmp/lab-bench               # cycle from default towers
    python benchmarks/bench_lab.py --out /tmp/lab-bench --from-scratch  # also CLIP + LM
    python benchmarks/bench_lab.py --mir-only                          # default MIR timing only

Prints a table (seconds) and writes JSON (--json). Targets: cycle < 15 min, default MIR < 1 min
on a 2-core CPU. Numbers depend on load: report them with the machine's core count and load.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch


def time_default_mir(n: int | None, batch_size: int) -> dict:
    """Load the shipped default through load_adapter and score its eval set with run_mir."""
    from modalign.assets import default_eval_pairs, default_model_path
    from modalign.measure.run import RunOptions, run_mir
    from modalign.models import load_adapter

    t0 = time.perf_counter()
    adapter = load_adapter(str(default_model_path()), device="cpu", dtype=torch.float32)
    pairs = default_eval_pairs(n)
    t1 = time.perf_counter()
    result = run_mir(adapter, pairs, RunOptions(batch_size=batch_size, progress=False))
    t2 = time.perf_counter()
    return {
        "load_s": t1 - t0,
        "mir_s": t2 - t1,
        "total_s": t2 - t0,
        "mir": result.mir,
        "n": len(pairs),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=None, help="cycle working directory")
    ap.add_argument("--from-scratch", action="store_true")
    ap.add_argument("--mir-only", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    report: dict = {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_start": os.getloadavg(),
    }
    report["default_mir"] = time_default_mir(None, 16)
    if not args.mir_only:
        if args.out is None:
            ap.error("--out is required unless --mir-only")
        from modalign_lab.pipeline.cycle import CycleConfig, run_cycle

        cycle = run_cycle(args.out, CycleConfig(from_scratch=args.from_scratch))
        report["cycle_wall_s"] = cycle["wall_s"]
        report["cycle_metrics"] = {
            "pretrain": cycle["pretrain"],
            "mir_pretrained": cycle["mir_pretrained"]["mir"],
            "mir_fresh_connector": {
                k: cycle["mir_fresh_connector"][k] for k in ("mir_mean", "mir_min", "mir_max")
            },
            "mir_trace": [(t["step"], t["mir"]) for t in cycle["pretrain"].get("mir_trace", [])],
            "vqa": {k: v["accuracy"] for k, v in cycle["eval"]["vqa"].items()},
        }
    report["load_avg_end"] = os.getloadavg()
    print(f"{'stage':<24}{'seconds':>10}")
    d = report["default_mir"]
    print(f"{'default MIR (load)':<24}{d['load_s']:>10.1f}")
    print(f"{'default MIR (score)':<24}{d['mir_s']:>10.1f}   MIR={d['mir']:.3f} n={d['n']}")
    for stage, secs in report.get("cycle_wall_s", {}).items():
        print(f"{'cycle ' + stage:<24}{secs:>10.1f}")
    print(
        f"cpus={report['cpu_count']} threads={report['torch_threads']} load={report['load_avg_start']}"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
