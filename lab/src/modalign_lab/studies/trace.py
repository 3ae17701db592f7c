"""What the MIR trace of pre-training is made of: the default recipe re-run with a monitor that
records, every few steps, each layer's token norms, the mean and covariance terms of its
Fréchet distance and the scale-free controls (`diagnostics.gap_terms`).

    modalign lab trace --out runs/trace --every 50      # -> docs/studies/reports/mir_trace.{json,md,png}
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from modalign.atomic import atomic_write_json, atomic_write_text
from modalign.train import MIRMonitor
from modalign_lab.studies import REPORT_DIR


class GapTrace(MIRMonitor):
    """The MIR monitor (never stopping) that also keeps each measurement's gap terms."""

    def __init__(self, processor: Any, pairs: Any, every: int, out_dir: Path) -> None:
        super().__init__(processor, pairs, every, stop=False, out_dir=out_dir)
        self._terms: dict[str, Any] | None = None

    def measure(self, model: Any) -> Any:
        from modalign.evidence import gap_terms
        from modalign.models import get_adapter

        self._terms = gap_terms(get_adapter(model, self.processor), self.pairs)
        layers = self._terms["layers"]
        return SimpleNamespace(mir=self._terms["mir"], per_layer=[x["fd"] for x in layers],
                               layers=[x["layer"] for x in layers])  # fmt: skip

    def entry(self, model: Any, step: int) -> dict[str, Any]:
        return {**super().entry(model, step), "terms": self._terms}


def trace_pretraining(
    out: Path, data: Path, *, every: int = 50, n: int = 100, recipe: Any = None,
    base: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The default cycle's pre-training (fresh connector on the embedded default, 1600 steps;
    or `recipe` on `base`) traced every `every` steps on `n` held-out pairs; resumable
    (checkpoints every 100 steps). Returns the trace (also out/gap_trace/mir_curve.json)."""
    import json

    from modalign.assets import default_model_path
    from modalign.train import prepare, train_stage
    from modalign_lab.pipeline.cycle import CycleConfig
    from modalign_lab.probes.mir import eval_pairs
    from modalign_lab.towers.llava import load_llava, reset_connector
    from modalign_lab.world.conversations import caption_conversations
    from modalign_lab.world.dataset import load_split

    cfg = CycleConfig()
    recipe = replace(recipe or cfg.pretrain, monitor=None)
    model, processor = load_llava(base or default_model_path())
    reset_connector(model, recipe.train.seed)
    model, processor = prepare(model, processor, recipe)
    trace = GapTrace(processor, eval_pairs(data, "test", n), every, Path(out) / "gap_trace")
    convs = caption_conversations(load_split(data, "train"), cfg.caption_level)
    train_stage(model, processor, convs, recipe, out, callbacks=[trace])
    read = lambda name: json.loads((Path(out) / name).read_text(encoding="utf-8"))  # noqa: E731
    return {"every": every, "n_probe": n, "train_log": read("train_log.json")["history"],
            "history": read("gap_trace/mir_curve.json")["history"]}  # fmt: skip


def summarize_trace(trace: dict[str, Any], train_log: list[dict[str, Any]]) -> dict[str, Any]:
    """Per measured step: MIR, the own-scaling control, the vision/text norm ratio, the summed
    mean and covariance terms, the mean cosine gap and the training loss near that step."""
    losses = [(h["step"], h["loss"]) for h in train_log if "loss" in h]
    rows = []
    for h in trace["history"]:
        layers = h["terms"]["layers"]
        near = min(losses, key=lambda s: abs(s[0] - h["step"]))[1] if losses else None
        rows.append({
            "step": h["step"],
            "mir": h["mir"],
            "mir_own_scaling": h["terms"]["mir_own_scaling"],
            "norm_ratio": [x["norm_ratio"] for x in layers],
            "mean_term": sum(x["mean_term"] for x in layers),
            "cov_term": sum(x["cov_term"] for x in layers),
            "cosine_gap": sum(x["cosine_gap"] for x in layers) / len(layers),
            "fd": [x["fd"] for x in layers],
            "train_loss": near,
        })  # fmt: skip
    return {"every": trace["every"], "n_probe": trace["n_probe"], "rows": rows}


def render_trace(summary: dict[str, Any]) -> str:
    """The trace table (every measured step)."""
    rows = summary["rows"]
    k = len(rows[0]["norm_ratio"]) if rows else 0
    head = ["step", "MIR", "MIR (own scaling)", "mean term", "cov. term", "cosine gap",
            *[f"norm ratio L{i + 1}" for i in range(k)], "train loss"]  # fmt: skip
    lines = ["# What the MIR trace of pre-training is made of", "",
             f"The default cycle's pre-training (1600 steps, connector only) measured every "
             f"{summary['every']} steps on {summary['n_probe']} held-out pairs. MIR uses text-centric "
             "scaling (both modalities divided by the mean text-token norm); 'own scaling' divides "
             "each modality by its own mean norm. Mean / covariance terms are summed over layers; "
             "norm ratio = mean vision-token norm / mean text-token norm per layer.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    for r in rows:
        cells = [str(r["step"]), f"{r['mir']:.3f}", f"{r['mir_own_scaling']:.3f}",
                 f"{r['mean_term']:.2f}", f"{r['cov_term']:.2f}", f"{r['cosine_gap']:.3f}",
                 *[f"{x:.2f}" for x in r["norm_ratio"]],
                 "-" if r["train_loss"] is None else f"{r['train_loss']:.3f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, ""])


def plot_trace(summary: dict[str, Any], out_png: Path) -> Path:
    """Four panels over steps: MIR and its control; norm ratios; mean vs covariance terms;
    cosine gap and training loss."""
    from modalign.report import new_figure, save_figure

    rows = summary["rows"]
    steps = [r["step"] for r in rows]
    fig = new_figure((9.6, 6.4))
    axes = [fig.add_subplot(2, 2, i + 1) for i in range(4)]
    axes[0].plot(steps, [r["mir"] for r in rows], marker="o", ms=3, label="MIR (text-centric)")
    axes[0].plot(steps, [r["mir_own_scaling"] for r in rows], marker="o", ms=3,
                 label="own scaling per modality")  # fmt: skip
    for i in range(len(rows[0]["norm_ratio"]) if rows else 0):
        axes[1].plot(steps, [r["norm_ratio"][i] for r in rows], label=f"layer {i + 1}")
    axes[2].plot(steps, [r["mean_term"] for r in rows], label="mean term")
    axes[2].plot(steps, [r["cov_term"] for r in rows], label="covariance term")
    axes[3].plot(steps, [r["cosine_gap"] for r in rows], label="cosine gap (layer mean)")
    loss = [(r["step"], r["train_loss"]) for r in rows if r["train_loss"] is not None]
    if loss:
        twin = axes[3].twinx()
        twin.plot(*zip(*loss, strict=True), color="grey", linestyle=":", label="train loss")
        twin.set_ylabel("train loss", fontsize="small")
    titles = ("MIR", "vision / text token norm", "FD terms (sum over layers)", "direction")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title, fontsize="small")
        ax.set_xlabel("step", fontsize="small")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small")
    return save_figure(fig, out_png)


def write_trace_report(trace: dict[str, Any], report_dir: Path = REPORT_DIR) -> dict[str, Any]:
    """REPORT_DIR/mir_trace.{json,md,png}."""
    summary = summarize_trace(trace, trace.get("train_log") or [])
    stem = Path(report_dir) / "mir_trace"
    atomic_write_json(stem.with_suffix(".json"), summary)
    atomic_write_text(stem.with_suffix(".md"), render_trace(summary))
    plot_trace(summary, stem.with_suffix(".png"))
    return summary
