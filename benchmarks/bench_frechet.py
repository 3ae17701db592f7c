"""Time the per-layer Fréchet distance for every backend against the methods users would use.

References: `scipy.linalg.sqrtm(S1 @ S2)` (pytorch-fid) and
`torch.linalg.eigvals(S1 @ S2).sqrt().real.sum()` (torchmetrics). Error is relative to a float64
reference: scipy's sqrtm where the covariances are full rank (n > d), the exact nuclear norm of
the centered cross product (NumPy SVD) where they are not (n < d).

    python benchmarks/bench_frechet.py                      # d = 1024 2048 4096, n = 2d and d/4
    python benchmarks/bench_frechet.py --dims 512 --skip newton_schulz --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import torch
from scipy import linalg

from modalign.metrics import frechet_distance, frechet_distance_tokens


def _tokens(n: int, d: int, seed: int, shift: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # anisotropic spectrum like hidden states: a few large directions, a long tail
    scales = torch.logspace(0, -2, d, dtype=torch.float64)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * scales + shift


def _reference_tr_sqrt(xa: torch.Tensor, xb: torch.Tensor, ca: np.ndarray, cb: np.ndarray) -> float:
    d = xa.shape[1]
    if min(xa.shape[0], xb.shape[0]) < d:
        a = (xa - xa.mean(0)).numpy()
        b = (xb - xb.mean(0)).numpy()
        sv = np.linalg.svd(a @ b.T, compute_uv=False)
        return float(sv.sum() / np.sqrt((a.shape[0] - 1) * (b.shape[0] - 1)))
    return float(np.trace(linalg.sqrtm(ca @ cb)).real)


def _methods(xa, xb, mu_a, mu_b, ca, cb, base) -> dict:
    """Every way to get the FD of one layer, as zero-argument callables."""
    ca_np, cb_np = ca.numpy(), cb.numpy()
    return {
        "exact": lambda: frechet_distance(mu_a, ca, mu_b, cb, sqrt="exact"),
        "exact (tokens)": lambda: frechet_distance_tokens(xa, xb, sqrt="exact"),
        "newton_schulz": lambda: frechet_distance(mu_a, ca, mu_b, cb, sqrt="newton_schulz"),
        "official": lambda: frechet_distance(mu_a, ca, mu_b, cb, sqrt="official"),
        "scipy sqrtm (pytorch-fid)": lambda: (
            base - 2 * float(np.trace(linalg.sqrtm(ca_np @ cb_np)).real)
        ),
        "torch eigvals (torchmetrics)": lambda: (
            base - 2 * float(torch.linalg.eigvals(ca @ cb).sqrt().real.sum())
        ),
    }


def _timed(fn, repeat: int):
    best, value = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t0)
    return value, best


def run(dims: list[int], ratios: list[float], repeat: int, skip: set[str]) -> list[dict]:
    rows = []
    for d in dims:
        for ratio in ratios:
            n = max(2, int(d * ratio))
            xa, xb = _tokens(n, d, 0, 0.0), _tokens(n + n // 3, d, 1, 0.05)
            mu_a, mu_b = xa.mean(0), xb.mean(0)
            ca, cb = torch.cov(xa.T), torch.cov(xb.T)
            ca_np, cb_np = ca.numpy(), cb.numpy()
            base = float((mu_a - mu_b) @ (mu_a - mu_b) + torch.trace(ca) + torch.trace(cb))
            t0 = time.perf_counter()
            ref = base - 2 * _reference_tr_sqrt(xa, xb, ca_np, cb_np)
            print(
                f"\nd={d} n_a={xa.shape[0]} n_b={xb.shape[0]}  reference FD={ref:.10g} "
                f"({time.perf_counter() - t0:.1f}s)",
                flush=True,
            )
            methods = _methods(xa, xb, mu_a, mu_b, ca, cb, base)
            results = {}
            for name, fn in methods.items():
                if any(name.startswith(s) for s in skip):
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    value, secs = _timed(fn, repeat)
                results[name] = (value, secs)
                err = abs(value - ref) / abs(ref)
                print(f"  {name:30s} {secs:9.3f}s  rel.err {err:9.2e}  FD={value:.10g}", flush=True)
            if "exact" in results:
                t_exact = results["exact"][1]
                for name, (value, secs) in results.items():
                    rows.append(
                        {
                            "d": d,
                            "n_a": xa.shape[0],
                            "n_b": xb.shape[0],
                            "method": name,
                            "seconds": secs,
                            "speedup_of_exact": secs / t_exact,
                            "rel_err": abs(value - ref) / abs(ref),
                            "value": value,
                            "ref": ref,
                        }
                    )
                print(
                    "  speed of exact vs: "
                    + ", ".join(
                        f"{k} {v[1] / t_exact:.1f}x" for k, v in results.items() if k != "exact"
                    )
                )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dims", type=int, nargs="+", default=[1024, 2048, 4096])
    p.add_argument(
        "--ratios",
        type=float,
        nargs="+",
        default=[2.0, 0.25],
        help="token count per set as a multiple of d (above and below d)",
    )
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--skip", nargs="*", default=[], help="method name prefixes to skip")
    p.add_argument("--json", help="write rows as JSON")
    args = p.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    rows = run(args.dims, args.ratios, args.repeat, set(args.skip))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
