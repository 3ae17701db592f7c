"""Pre-training step time and peak memory: baseline vs +MoCa vs +MIR monitor every 100 steps.

    python benchmarks/bench_training.py --steps 300 --threads 2 --json benchmarks/results/training_cpu.json

Each configuration runs in its own process (peak RSS is per process) on the shipped default's
towers (the real lab model: 4-layer 128-d Llama, 3-layer ViT, 9 image tokens) with LLaVA stage-1
settings (connector only, batch 32, the lab's recipe), and reports seconds per optimizer step,
the overhead ratio against the baseline and the peak resident memory. One run per configuration:
timings depend on machine load; compare ratios from the same invocation.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = {
    "baseline": {},
    "moca": {"moca": True},
    "mir_monitor_every_100": {"monitor": 100},
}


def one(config: str, steps: int, data: Path, out: Path, threads: int) -> dict:
    """Run one configuration in this process; returns its timings and peak RSS."""
    import torch

    torch.set_num_threads(threads)
    from modalign_lab.pipeline.cycle import lab_recipe
    from modalign_lab.probes.mir import eval_pairs
    from modalign_lab.towers.llava import load_llava, reset_connector
    from modalign_lab.world.conversations import caption_conversations
    from modalign_lab.world.dataset import load_split

    from modalign.assets import default_model_path
    from modalign.train.fit import TrainConfig
    from modalign.train.recipe import MonitorSettings, prepare, train_stage

    opts = CONFIGS[config]
    monitor = MonitorSettings(every=opts["monitor"], stop=False) if "monitor" in opts else None
    train = TrainConfig(steps=steps, batch_size=32, lr=1e-3, log_steps=50, progress=False)
    recipe = lab_recipe("pretrain", train, moca=opts.get("moca", False), monitor=monitor)
    model, processor = load_llava(default_model_path())
    reset_connector(model, 0)
    model, processor = prepare(model, processor, recipe)
    convs = caption_conversations(load_split(data, "train"), 3)
    probe = eval_pairs(data, "test", 100) if monitor else None
    t0 = time.perf_counter()
    summary = train_stage(model, processor, convs, recipe, out / config, probe=probe)
    wall = time.perf_counter() - t0
    return {
        "config": config,
        "steps": summary["steps"],
        "wall_s": wall,
        "train_runtime_s": summary["runtime_s"],
        "s_per_step": summary["runtime_s"] / summary["steps"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": threads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--one", choices=list(CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.steps, args.data, args.out, args.threads)))
        return
    from modalign_lab.towers.train import make_data

    from modalign.assets import default_model_path

    work = Path(tempfile.mkdtemp(prefix="bench-training-"))
    data = make_data(work / "data", seed=0, sizes={"train": 1024, "val": 8, "test": 100},
                     image_size=96, corpus_scenes=10, tokenizer_from=default_model_path())  # fmt: skip
    rows = []
    for config in CONFIGS:
        cmd = [sys.executable, __file__, "--one", config, "--steps", str(args.steps),
               "--threads", str(args.threads), "--data", str(data), "--out", str(work / "runs")]  # fmt: skip
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{config}: {rows[-1]['s_per_step']:.4f} s/step", file=sys.stderr, flush=True)
    base = rows[0]["s_per_step"]
    print(f"{'config':<24} {'s/step':>8} {'ratio':>7} {'peak RSS MiB':>13}")
    for r in rows:
        r["ratio_vs_baseline"] = r["s_per_step"] / base
        print(f"{r['config']:<24} {r['s_per_step']:>8.4f} {r['ratio_vs_baseline']:>7.3f} "
              f"{r['peak_rss_mib']:>13.0f}")  # fmt: skip
    if args.json:
        from modalign.atomic import atomic_write_json

        atomic_write_json(args.json, {"steps": args.steps, "rows": rows})


if __name__ == "__main__":
    main()
