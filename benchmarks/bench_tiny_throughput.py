"""Throughput (samples/s) and peak memory of `run_mir` on a tiny LLaVA on CPU, N=20 vs N=200.

    python benchmarks/bench_tiny_throughput.py [--family llava] [--batch-size 8] [--threads 1]

Each N runs in a fresh subprocess so that peak RSS (resource.getrusage) is per run; the
baseline is taken after loading the model and one warm-up batch, so the growth column is what
the run itself added. tracemalloc reports the Python-heap peak of the run (pairs, lists...).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path


def _make_data(root: Path, n: int) -> tuple[Path, Path]:
    """`n` small PNGs and `n` passages on disk (the CLI's inputs)."""
    import torch
    from PIL import Image

    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        arr = (torch.rand(24 + i % 9, 32, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr, "RGB").save(images / f"{i:04d}.png")
    words = [
        "a",
        "red",
        "circle",
        "blue",
        "square",
        "green",
        "triangle",
        "near",
        "the",
        "top",
        "left",
        "of",
        "a",
        "picture",
    ]
    lines = [" ".join(words[(i + j) % len(words)] for j in range(6 + i % 10)) for i in range(n)]
    texts = root / "texts.txt"
    texts.write_text("\n".join(lines) + "\n")
    return images, texts


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(model: str, images: str, texts: str, n: int, batch: int, threads: int) -> None:
    """One measured run; prints a JSON line."""
    import torch

    from modalign.data import SampleSource
    from modalign.measure.run import RunOptions, run_mir
    from modalign.models import load_adapter

    torch.set_num_threads(threads)
    adapter = load_adapter(model, device="cpu", dtype="float32")
    source = SampleSource.from_folder(images, texts)
    opts = RunOptions(batch_size=batch, progress=False)
    run_mir(adapter, source.sample(batch, seed=1, lazy=True), opts)  # warm-up
    base = _rss_mb()
    pairs = source.sample(n, seed=0, lazy=True)
    tracemalloc.start()
    t0 = time.perf_counter()
    result = run_mir(adapter, pairs, opts)
    dt = time.perf_counter() - t0
    _, heap_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(json.dumps({"n": n, "seconds": dt, "samples_per_s": n / dt, "rss_base_mb": base,
                      "rss_peak_mb": _rss_mb(), "py_heap_peak_mb": heap_peak / 2**20,
                      "mir": result.mir}))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="llava")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sizes", default="20,200")
    ap.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        m, i, t, n, b, th = args.child
        child(m, i, t, int(n), int(b), int(th))
        return
    from modalign.testing.tiny_vlms import build_tiny

    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny(args.family, root / "model")
        images, texts = _make_data(root / "data", max(sizes))
        rows = []
        for n in sizes:
            cmd = [sys.executable, __file__, "--child", str(model), str(images), str(texts),
                   str(n), str(args.batch_size), str(args.threads)]  # fmt: skip
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"tiny {args.family}, CPU, batch {args.batch_size}, {args.threads} thread(s)")
    print(f"{'N':>5} {'s':>7} {'samples/s':>10} {'RSS base MB':>12} {'RSS peak MB':>12} "
          f"{'growth MB':>10} {'py heap MB':>11}")  # fmt: skip
    for r in rows:
        growth = r["rss_peak_mb"] - r["rss_base_mb"]
        print(f"{r['n']:>5} {r['seconds']:>7.2f} {r['samples_per_s']:>10.1f} "
              f"{r['rss_base_mb']:>12.1f} {r['rss_peak_mb']:>12.1f} {growth:>10.1f} "
              f"{r['py_heap_peak_mb']:>11.2f}")  # fmt: skip
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        print(f"peak RSS ratio N={b['n']} / N={a['n']}: {b['rss_peak_mb'] / a['rss_peak_mb']:.3f}")


if __name__ == "__main__":
    main()
