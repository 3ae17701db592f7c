"""The export matrix: every connector x MoCa x written form of the tiny LLaVA, loaded by a
process where modalign cannot be imported, compared bit for bit with modalign's own loader.
Prints the Markdown table (and writes it with --out).

    python benchmarks/export_matrix.py [--out matrix.md] [--dtype float32|bfloat16] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from modalign.testing.export_matrix import markdown_table, measure, probe_images, write_cases
from modalign.testing.tiny_vlms import build_tiny


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        llava = build_tiny("llava", root / "llava")
        images = probe_images(root / "images")
        cases = write_cases(llava, root / "cases", images)
        cells = measure(cases, images, root / "work", dtype=args.dtype)
        table = markdown_table(cells)
        seconds = time.perf_counter() - start
    print(table)
    written = [c for c in cells if c.case.folder is not None]
    equal = [c for c in written if c.logits_equal and c.generations_equal and c.inputs_equal]
    print(f"\n{len(written)} folders written, {len(equal)} equal to modalign's loader bit for bit "
          f"({args.dtype}, {seconds:.0f} s)")  # fmt: skip
    if args.out:
        Path(args.out).write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
