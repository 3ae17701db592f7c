"""The cross-study table: for every study report in a folder, how well each measure of the
pre-trained checkpoints ranks their post-SFT accuracy (pooled Spearman over checkpoints with
its bootstrap interval, and over the seed-averaged variants), beside the spread of post-SFT
accuracy that makes the question testable at all (variant means against seed-to-seed range)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from modalign.atomic import atomic_write_json, atomic_write_text
from modalign.errors import DataError
from modalign.evidence import MEASURES
from modalign.report import new_figure, save_figure
from modalign_lab.studies import REPORT_DIR

# caption perplexity = exp(caption loss) ranks checkpoints exactly as the loss: not repeated
INDEX_MEASURES = ("mir", "caption_loss", "mmd", "centroid_gap", "cosine_gap")
POOLED = "all groups (pooled)"
INDEX_NAME = "index"


def load_summaries(folder: str | Path) -> list[dict[str, Any]]:
    """Every study summary (`lab study`'s NAME.json) in `folder`, by study name; other JSON
    files there (e.g. the MIR-trace table) are skipped."""
    summaries = []
    for path in sorted(Path(folder).glob("*.json")):
        if path.stem == INDEX_NAME:
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: not a readable JSON file ({exc})") from exc
        if isinstance(data, dict) and "study" in data and "sft" in data:
            summaries.append(data)
    return sorted(summaries, key=lambda s: s["study"])


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def index_rows(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (study, SFT recipe): checkpoints, variants, the accuracy spread, and per
    measure the pooled Spearman [95% CI] and the Spearman over variant means."""
    rows = []
    for summary in summaries:
        for sft, part in summary["sft"].items():
            pooled = ((part.get("validate") or {}).get("correlations") or {}).get(POOLED, {})
            over = part.get("spearman_over_variant_means") or {}
            measures = {}
            for name in INDEX_MEASURES:
                stats = pooled.get(name) or {}
                ci = (stats.get("ci") or {}).get("spearman")
                measures[name] = {
                    "spearman": _finite(stats.get("spearman")),
                    "ci": [float(c) for c in ci] if ci and all(_finite(c) is not None for c in ci)
                    else None,
                    "over_means": _finite(over.get(name)),
                }  # fmt: skip
            n = max((pooled.get(m) or {}).get("n", 0) for m in INDEX_MEASURES) if pooled else 0
            spread = part.get("spread") or {}
            across = _finite(spread.get("vqa_all_across_variants"))
            seed_max = _finite(spread.get("vqa_all_seed_range_max"))
            ranked = [(v["spearman"], m) for m, v in measures.items() if v["spearman"] is not None]
            rows.append({
                "study": summary["study"], "sft": sft, "reference": summary.get("reference", ""),
                "paper_mir_spearman": _finite(summary.get("paper_mir_spearman")),
                "variants": len(part.get("variants") or {}), "checkpoints": n,
                "vqa_spread": across, "seed_range_max": seed_max,
                "seed_range_mean": _finite(spread.get("vqa_all_seed_range_mean")),
                # a study can rank its points only where this exceeds 1
                "ratio": across / seed_max if across is not None and seed_max else None,
                "best": min(ranked)[1] if ranked else None,
                "measures": measures,
            })  # fmt: skip
    return rows


def _rho(entry: dict[str, Any]) -> str:
    if entry["spearman"] is None:
        return "-"
    text = f"{entry['spearman']:+.2f}"
    return text + (f" [{entry['ci'][0]:+.2f}, {entry['ci'][1]:+.2f}]" if entry["ci"] else "")


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def render_index(rows: list[dict[str, Any]]) -> str:
    """The Markdown cross-study table."""
    labels = [MEASURES[m].label for m in INDEX_MEASURES]
    lines = ["# Does MIR predict post-SFT accuracy? Every study at a glance", "",
             "Per study and SFT recipe: Spearman of each measure of the pre-trained checkpoints "
             "with held-out VQA after SFT, pooled over every checkpoint (variant x seed) with its "
             "95% bootstrap interval; below, over the seed-averaged variants. Lower is better "
             "aligned for every measure, so a measure that predicts accuracy is *negative*. "
             "'VQA spread' is the range of the variant means; a study can test the question only "
             "where it exceeds the largest seed-to-seed range (ratio > 1). Caption perplexity, "
             "exp of the loss, ranks as the loss does. 'paper: MIR' is the Spearman of MIR with "
             "the post-SFT average the MIR paper reports for the same sweep (computed from its "
             "tables; the sweeps are listed in docs/methods.md). Written by `modalign lab "
             "study-index` from the study reports in this folder.",
             "",
             "| study | SFT | variants | checkpoints | VQA spread | seed range (max) | ratio | "
             + " | ".join(labels) + " | most negative | paper: MIR |",
             "|" + "---|" * (9 + len(labels))]  # fmt: skip
    for r in rows:
        cells = [_rho(r["measures"][m]) for m in INDEX_MEASURES]
        best = MEASURES[r["best"]].label if r["best"] else "-"
        lines.append(f"| {r['study']} | {r['sft']} | {r['variants']} | {r['checkpoints']} | "
                     f"{_num(r['vqa_spread'], '.3f')} | {_num(r['seed_range_max'], '.3f')} | "
                     f"{_num(r['ratio'], '.1f')} | "
                     + " | ".join(cells) + f" | {best} | {_num(r['paper_mir_spearman'], '+.2f')} |")  # fmt: skip
    shown = [m for m in INDEX_MEASURES
             if any(r["measures"][m]["over_means"] is not None for r in rows)]  # fmt: skip
    lines += ["", "Over the variant means (seed-averaged):", "",
              "| study | SFT | " + " | ".join(MEASURES[m].label for m in shown) + " |",
              "|" + "---|" * (2 + len(shown))]  # fmt: skip
    for r in rows:
        cells = [_num(r["measures"][m]["over_means"], "+.2f") for m in shown]
        lines.append(f"| {r['study']} | {r['sft']} | " + " | ".join(cells) + " |")
    refs = {r["study"]: r["reference"] for r in rows if r["reference"]}
    if refs:
        lines += ["", "What each study is compared with:", ""]
        lines += [f"- `{name}`: {ref}" for name, ref in refs.items()]
    return "\n".join(lines) + "\n"


def plot_index(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """A forest plot: per (study, SFT) row, each measure's pooled Spearman with its interval."""
    fig = new_figure((9.0, 1.2 + 0.55 * max(1, len(rows))))
    ax = fig.add_subplot()
    width = 0.8 / len(INDEX_MEASURES)
    for k, name in enumerate(INDEX_MEASURES):
        ys, xs, lo, hi = [], [], [], []
        for i, r in enumerate(rows):
            entry = r["measures"][name]
            if entry["spearman"] is None:
                continue
            ys.append(i - 0.4 + width * (k + 0.5))
            xs.append(entry["spearman"])
            ci = entry["ci"] or [entry["spearman"]] * 2
            lo.append(entry["spearman"] - ci[0])
            hi.append(ci[1] - entry["spearman"])
        ax.errorbar(xs, ys, xerr=[lo, hi], fmt="o", ms=4, capsize=2, label=MEASURES[name].label)
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.set_yticks(range(len(rows)), [f"{r['study']} / {r['sft']}" for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel("Spearman with post-SFT VQA (pooled checkpoints, 95% CI); negative = predicts")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)


def write_index(
    folder: str | Path = REPORT_DIR, out: str | Path | None = None
) -> list[dict[str, Any]]:
    """Read the study reports in `folder` and write index.{md,json,png} to `out` (default:
    the same folder)."""
    rows = index_rows(load_summaries(folder))
    if not rows:
        raise DataError(f"{folder}: no study report (lab study's NAME.json) to index")
    target = Path(out if out is not None else folder)
    atomic_write_json(target / f"{INDEX_NAME}.json", {"rows": rows})
    plot_index(rows, target / f"{INDEX_NAME}.png")
    atomic_write_text(target / f"{INDEX_NAME}.md", render_index(rows))
    return rows
