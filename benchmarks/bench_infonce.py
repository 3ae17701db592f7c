"""The shared InfoNCE against the three implementations it replaced, forward + backward, one process.

    python benchmarks/bench_infonce.py --threads 1 --json benchmarks/results/infonce_cpu.json

At the lab's sizes (SEA: up to 31 pairs, the label words, of LLM width 128; contrastive: a
32-image batch at width 128; NegCLIP: the CLIP tower's 64 images against 128 captions from the
model's logits) and at LLaVA-1.5 sizes (width 4096; SEA 512 pairs, contrastive 256 images).
Median of `--repeats` timed runs (about `--budget` seconds each), the old and the shared one
timed twice in turn and the faster median kept; ratio = shared / old (1.0: as fast).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F


def _old_symmetric_infonce(a, b, logit_scale):
    """SEA's (and the contrastive objective's) InfoNCE before the shared one."""
    logits = logit_scale * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T  # (N, N)
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def _old_negclip_loss(outputs, labels):
    """The lab's NegCLIP loss before the shared one."""
    b = labels.numel()
    per_image, per_text = outputs.logits_per_image, outputs.logits_per_text[:b]
    return 0.5 * (F.cross_entropy(per_image, labels) + F.cross_entropy(per_text, labels))


def _time(fn: Callable[[], torch.Tensor], repeats: int, budget: float) -> float:
    """Median seconds per call of fn() + backward, over runs of about `budget` seconds each."""
    t0 = time.perf_counter()
    for _ in range(3):
        fn().backward()
    inner = max(1, int(budget * 3 / (time.perf_counter() - t0)))
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn().backward()
        runs.append((time.perf_counter() - t0) / inner)
    return statistics.median(runs)


def _pair_case(g: torch.Generator, n: int, d: int, keys: bool):
    """(old call, shared call) on n pairs of width d: the A side trains, the B side is frozen
    (SEA's word embeddings, the contrastive objective's cached text); SEA passes its words."""
    from modalign.methods.objectives import symmetric_infonce

    a, b = torch.randn(n, d, generator=g).requires_grad_(True), torch.randn(n, d, generator=g)
    scale = torch.tensor(0.0, requires_grad=True)
    k = torch.randperm(n, generator=g) if keys else None
    return (lambda: _old_symmetric_infonce(a, b, scale.exp()),
            lambda: symmetric_infonce(a, b, scale.exp(), keys=k))  # fmt: skip


def _negclip_case(g: torch.Generator, b: int):
    """(old call, shared call) on CLIPModel-like logits of b images against 2b captions."""
    from modalign_lab.towers.clip_loss import negclip_loss

    logits = torch.randn(b, 2 * b, generator=g).requires_grad_(True)
    labels = torch.arange(b)

    def outputs():
        per_image = logits * 1.0  # a fresh graph per call, as the model's forward gives
        return SimpleNamespace(logits_per_image=per_image, logits_per_text=per_image.T)

    return (lambda: _old_negclip_loss(outputs(), labels),
            lambda: negclip_loss(outputs(), labels))  # fmt: skip


def _cases(g: torch.Generator):
    """(name, old call, shared call) at each size."""
    out = []
    for size, n_sea, n_con, d in (("lab", 31, 32, 128), ("llava", 512, 256, 4096)):
        out.append((f"sea ({size}: {n_sea} x {d})", *_pair_case(g, n_sea, d, keys=True)))
        out.append((f"contrastive ({size}: {n_con} x {d})", *_pair_case(g, n_con, d, keys=False)))
    out.append(("negclip (lab: 64 x 128 logits)", *_negclip_case(g, 64)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--budget", type=float, default=0.2, help="seconds per timed run")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name, old, new in _cases(torch.Generator().manual_seed(0)):
        # alternate so drift on a shared machine hits both alike
        t_old = _time(old, args.repeats, args.budget)
        t_new = _time(new, args.repeats, args.budget)
        t_old = min(t_old, _time(old, args.repeats, args.budget))
        t_new = min(t_new, _time(new, args.repeats, args.budget))
        rows.append({"case": name, "old_us": t_old * 1e6, "shared_us": t_new * 1e6,
                     "ratio": t_new / t_old})  # fmt: skip
        print(f"{name:<36} old {t_old * 1e6:9.1f} us  shared {t_new * 1e6:9.1f} us  "
              f"ratio {t_new / t_old:5.2f}", flush=True)  # fmt: skip
    if args.json:
        from modalign.atomic import atomic_write_json

        atomic_write_json(args.json, {"threads": args.threads, "rows": rows})


if __name__ == "__main__":
    main()
