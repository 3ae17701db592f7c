"""A study's Markdown report: per SFT recipe, the table of points (mean [min, max] over seeds),
the spread of post-SFT accuracy across variants against the seed-to-seed spread, and the
correlations of each measure with post-SFT accuracy from `modalign validate`."""

from __future__ import annotations

from typing import Any

from modalign.evidence import MEASURES, STATISTICS
from modalign_lab.studies.curves import curves_markdown

COLUMNS = (
    ("mir", "MIR", ".3f"),
    ("caption_loss", "caption loss", ".3f"),
    ("perplexity", "PPL", ".3f"),
    ("mmd", "MMD", ".3g"),
    ("kid", "KID", ".3g"),
    ("mir_fresh", "MIR fresh conn.", ".3f"),
    ("vqa_all", "VQA all", ".3f"),
    ("vqa_colour", "colour", ".2f"),
    ("vqa_shape", "shape", ".2f"),
    ("vqa_count", "count", ".2f"),
    ("vqa_position", "position", ".2f"),
    ("vqa_existence", "existence", ".2f"),
    ("vqa_glyph", "glyph", ".2f"),
    ("text_loss", "text loss after SFT", ".3f"),
    ("recall", "recall (layer 0)", ".3f"),
    ("image_tokens", "image tokens", ".0f"),
    ("pretrain_s_per_step", "PT s/step", ".3f"),
)
SHOWN_MEASURES = ("mir", "caption_loss", "perplexity", "mmd", "mmd_layerwise", "kid",
                  "kid_layerwise", "centroid_gap", "cosine_gap")  # fmt: skip


def _cell(stat: dict[str, float] | None, fmt: str) -> str:
    if stat is None:
        return "-"
    if stat["n"] == 1:
        return format(stat["mean"], fmt)
    return f"{format(stat['mean'], fmt)} [{format(stat['min'], fmt)}, {format(stat['max'], fmt)}]"


def _num(value: float | None, fmt: str = "+.2f") -> str:
    return "undefined" if value is None else format(value, fmt)


def _stat(stats: dict[str, Any], name: str) -> str:
    ci = (stats.get("ci") or {}).get(name)
    value = stats.get(name)
    if value is None:
        return "undefined"
    return f"{value:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else f"{value:+.2f}"


def _correlation_table(correlations: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| group | measure | n | " + " | ".join(s.capitalize() for s in STATISTICS) + " |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for group, table in correlations.items():
        for name in SHOWN_MEASURES:
            if name in table:
                stats = table[name]
                lines.append(f"| {group} | {MEASURES[name].label} | {stats['n']} | "
                             + " | ".join(_stat(stats, s) for s in STATISTICS) + " |")  # fmt: skip
    return lines


def _layer_table(variants: dict[str, Any]) -> list[str]:
    """Per-layer FD after pre-training (the cycle's own MIR run; layer k = output of decoder
    layer k) and recalled-word accuracy per kind, where the points have them."""
    layers = sorted({int(k.removeprefix("fd_layer")) for v in variants.values() for k in v
                     if k.startswith("fd_layer")})  # fmt: skip
    kinds = [k for k in ("colour", "shape", "glyph")
             if any(f"recall_{k}" in v for v in variants.values())]  # fmt: skip
    if not layers:
        return []
    cols = [(f"fd_layer{k}", f"FD layer {k}", ".3g") for k in layers]
    cols += [(f"recall_{k}", f"recall {k}", ".3f") for k in kinds]
    lines = ["", "Per layer, after pre-training (the cycle's MIR run on its held-out pairs): "
             "Fréchet distance per decoder layer (text-centric scaling) and recalled-word "
             "accuracy of the image tokens per kind:", "",
             "| variant | " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * (1 + len(cols))]  # fmt: skip
    for name, v in variants.items():
        lines.append(f"| {name} | " + " | ".join(_cell(v.get(k), f) for k, _, f in cols) + " |")
    return lines


def render_markdown(summary: dict[str, Any]) -> str:
    """The whole study report (one section per SFT recipe)."""
    lines = [f"# Study `{summary['study']}`", "", summary["description"], "",
             f"Compared with: {summary['reference']}", "",
             "Each point: pre-train (variant) -> MIR, baselines, caption loss / perplexity of the "
             "pre-trained checkpoint on the probe pairs (`modalign validate`, the first seed's "
             "held-out images with detailed captions) -> SFT -> held-out VQA (exact match). Each "
             "cell: mean [min, max] over seeds. Lower MIR, loss, PPL, MMD, KID are better "
             "aligned, so a measure that predicts post-SFT accuracy correlates negatively.", ""]  # fmt: skip
    for sft, part in summary["sft"].items():
        note = summary["sft_recipes"].get(sft, "")
        lines += [f"## SFT `{sft}`" + (f": {note}" if note else ""), ""]
        variants = part["variants"]
        cols = [c for c in COLUMNS if any(c[0] in v for v in variants.values())]
        lines += ["| variant | seeds | " + " | ".join(c[1] for c in cols) + " |",
                  "|" + "---|" * (2 + len(cols))]  # fmt: skip
        for name, v in variants.items():
            cells = [_cell(v.get(key), fmt) for key, _, fmt in cols]
            lines.append(f"| {name} | {len(v['seeds'])} | " + " | ".join(cells) + " |")
        lines += _layer_table(variants)
        spread = part["spread"]
        lines += ["", "Post-SFT accuracy (VQA all): range of the variant means "
                  f"{_num(spread['vqa_all_across_variants'], '.3f')}; seed-to-seed range within a "
                  f"variant: largest {_num(spread['vqa_all_seed_range_max'], '.3f')}, mean "
                  f"{_num(spread['vqa_all_seed_range_mean'], '.3f')}.", ""]  # fmt: skip
        over = part["spearman_over_variant_means"]
        if over:
            lines += ["Spearman over the variant means (seed-averaged) with VQA all: "
                      + ", ".join(f"{MEASURES[m].label} {_num(r)}" for m, r in over.items()), ""]  # fmt: skip
        validate = part.get("validate") or {}
        if validate.get("correlations"):
            lines += ["Per checkpoint (every variant x seed), from `modalign validate` with 95% "
                      "bootstrap intervals:", "", *_correlation_table(validate["correlations"]), ""]  # fmt: skip
        for w in validate.get("warnings") or []:
            lines.append(f"- warning: {w}")
        lines.append("")
    lines += curves_markdown(summary.get("traces") or {})
    notes = [f"- `{n}`: {v['note']}" for n, v in next(iter(summary["sft"].values()), {})
             .get("variants", {}).items() if v["note"]]  # fmt: skip
    if notes:
        lines += ["Variants:", *notes, ""]
    return "\n".join(lines)
