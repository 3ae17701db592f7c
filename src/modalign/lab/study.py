"""Named studies: a grid of pre-training variants, each a full cycle (pre-train -> MIR -> SFT ->
held-out VQA), over several seeds, with a report of every measure and its seed-to-seed range.

    modalign lab study toolkit --out runs/study --seeds 0 1

Each (variant, seed) cycle lives in OUT/NAME/VARIANT/seedK and resumes after a kill; cycles of
one seed share one dataset (OUT/NAME/data-seedK). After every finished cycle the report is
rewritten: docs/studies/NAME.json (all numbers), NAME.md (the table) and NAME.png (MIR vs VQA).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from modalign.atomic import atomic_write_json, atomic_write_text
from modalign.lab.cycle import CycleConfig, run_cycle
from modalign.methods.lora import LoraSpec
from modalign.registry import Registry
from modalign.train.recipe import Recipe


@dataclass(frozen=True)
class Variant:
    """One grid point: a name, what it changes in the pre-training recipe, and why.

    `change(recipe, resources)`: `resources` is what the study's `prepare` made for the seed
    (e.g. a SEA label cache); most variants ignore it.
    """

    name: str
    change: Callable[[Recipe, dict[str, Any]], Recipe]
    note: str = ""


@dataclass(frozen=True)
class Study:
    """A named grid of variants and the paper result it is compared with. `prepare(root, data,
    cycle, seed) -> resources` runs once per seed before its cycles (resumable itself)."""

    name: str
    description: str
    variants: tuple[Variant, ...]
    reference: str = ""
    cycle: CycleConfig = field(default_factory=CycleConfig)
    prepare: Callable[[Path, Path, CycleConfig, int], dict[str, Any]] | None = None


STUDIES: Registry[Callable[[], Study]] = Registry("study")


def _recipe(**changes: Any) -> Callable[[Recipe], Recipe]:
    """A recipe change: top-level Recipe fields and, under `unlock`/`lrs`, stage fields."""
    unlock = changes.pop("unlock", None)
    lrs = changes.pop("lrs", None)
    lr = changes.pop("lr", None)

    def change(recipe: Recipe, resources: dict[str, Any] | None = None) -> Recipe:
        stage = recipe.stage
        if unlock is not None:
            stage = replace(stage, unlock=replace(stage.unlock, **unlock))
        if lrs is not None:
            stage = replace(stage, component_lrs={**stage.component_lrs, **lrs})
        train = replace(recipe.train, lr=lr) if lr is not None else recipe.train
        return replace(recipe, stage=stage, train=train, **changes)

    return change


# Tiny-world sizes of the attention connectors (the real-size defaults are BERT-base / TinyLLaVA).
QFORMER = "qformer:hidden_size=64,num_layers=2,num_heads=4,intermediate_size=256"
RESAMPLER = "resampler:num_queries=9,num_layers=2,num_heads=4,head_dim=16"
LORA = LoraSpec(r=16, alpha=4.0, dropout=0.05)  # alpha / r = 0.25, as the official r=64, a=16
LLM_LR = 1e-4  # the LLM's own rate when it is unlocked in pre-training (connector keeps 1e-3)


@STUDIES.register("toolkit")
def _toolkit() -> Study:
    return Study(
        name="toolkit",
        description="Pre-training variants of the toolkit: MoCa, every connector, every "
        "LLM-unlock strategy (MIR paper Tables 3-5, in miniature).",
        reference="MIR-main Table 3 (unlock: none > LoRA > former half > all in MIR), Table 4 "
        "(connectors: 2-layer MLP best, Q-Former far worst), Table 5 (MoCa lowers MIR, +1.5 avg)",
        variants=(
            Variant("baseline", _recipe(), "LLaVA-1.5 stage 1: mlp2x_gelu connector only"),
            Variant("moca", _recipe(moca=True), "+ MoCa (trained in pre-training and SFT)"),
            Variant("linear", _recipe(connector="linear")),
            Variant("mlp4x_gelu", _recipe(connector="mlp4x_gelu")),
            Variant(
                "qformer",
                _recipe(connector=QFORMER, lr=1e-4),
                "32 queries, no text input; lr 1e-4 as the official Q-Former script",
            ),
            Variant("resampler", _recipe(connector=RESAMPLER), "9 latents"),
            Variant("pool", _recipe(connector="pool:grid=2"), "3x3 -> 2x2 average pool + linear"),
            Variant(
                "llm_lora_merged",
                _recipe(unlock={"llm": "lora", "lora": LORA}, lrs={"lora": 1e-3}),
                "LoRA r16 on every LLM linear, merged after pre-training",
            ),
            Variant(
                "llm_lora_kept",
                _recipe(
                    unlock={"llm": "lora", "lora": replace(LORA, merge=False)}, lrs={"lora": 1e-3}
                ),
                "LoRA kept as a module, trained on in SFT",
            ),
            Variant(
                "llm_former_half",
                _recipe(unlock={"llm": "first:2"}, lrs={"llm": LLM_LR}),
                "decoder layers 0-1 of 4 + embeddings, LLM lr 1e-4",
            ),
            Variant(
                "llm_all",
                _recipe(unlock={"llm": "full"}, lrs={"llm": LLM_LR}),
                "every LLM layer + embeddings + norm + head, LLM lr 1e-4",
            ),
        ),
    )


def _prepare_alignment(root: Path, data: Path, cycle: CycleConfig, seed: int) -> dict[str, Any]:
    """Per seed: the dataset, a LiT text tower for the base's vision tower, SEA labels."""
    import json

    from modalign.lab.default import default_model_path
    from modalign.lab.sea import lit_clip, sea_labels
    from modalign.lab.towers import make_data

    base = default_model_path()
    make_data(data, seed=seed, sizes=cycle.sizes, image_size=cycle.image_size,
              corpus_scenes=cycle.corpus_scenes, tokenizer_from=base)  # fmt: skip
    folder = root / f"sea-seed{seed}"
    choice = folder / "labels" / "choice.json"
    if choice.is_file():
        return json.loads(choice.read_text(encoding="utf-8"))
    return sea_labels(data, lit_clip(data, base, folder / "clip"), folder / "labels")


def _objective(text: str) -> Callable[[Recipe, dict[str, Any]], Recipe]:
    """A variant adding an objective; `{labels}` is filled from the seed's resources."""

    def change(recipe: Recipe, resources: dict[str, Any]) -> Recipe:
        from modalign.methods.objectives import ObjectiveSpec

        spec = ObjectiveSpec.parse(text.format(**resources))
        return replace(
            recipe, stage=replace(recipe.stage, objectives=(*recipe.stage.objectives, spec))
        )

    return change


@STUDIES.register("alignment")
def _alignment() -> Study:
    return Study(
        name="alignment",
        description="Contrastive alignment in pre-training: SEA (token-level, CLIP word labels) "
        "and the joint contrastive + next-token loss, with and without prompts.",
        reference="SEA Table 2 (SEA > LLaVA, largest gains for the smallest LLM; MMLU kept), "
        "CONTRA Table 2 (w/ cont improves most benchmarks; prompts help some LLMs only)",
        variants=(
            Variant("baseline", _recipe(), "LLaVA-1.5 stage 1: mlp2x_gelu connector only"),
            Variant(
                "sea",
                _objective("sea:1,labels={labels}"),
                "lambda 1, n 10, 2x2 windows; labels from a LiT text tower on the base's "
                "vision tower, the similarity sign chosen on the val split",
            ),
            Variant(
                "contrastive", _objective("contrastive:1"), "equal weights, tau 0.07 learnable"
            ),
            Variant(
                "contrastive_prompt",
                _objective("contrastive:1,prompt=true"),
                "PromptBERT-style wrappers",
            ),
        ),
        prepare=_prepare_alignment,
    )


def variant_config(
    study: Study, variant: Variant, seed: int, resources: dict[str, Any] | None = None
) -> CycleConfig:
    """The cycle of one grid point: the study's cycle with the variant's pre-training recipe."""
    base = study.cycle
    recipe = replace(base.pretrain, train=replace(base.pretrain.train, seed=seed))
    pretrain = variant.change(recipe, resources or {})
    sft = replace(base.sft, train=replace(base.sft.train, seed=seed))
    return replace(base, seed=seed, pretrain=pretrain, sft=sft)


def _row(report: dict) -> dict[str, float]:
    """The measures of one finished cycle."""
    vqa = report["eval"]["vqa"]
    return {
        "mir": report["mir_pretrained"]["mir"],
        "mir_fresh": report["mir_fresh_connector"]["mir_mean"],
        "caption_loss": report["pretrain"]["test_caption_loss"],
        "vqa_all": vqa["all"]["accuracy"],
        **(
            {"recall": report["recall_pretrained"]["accuracy"]}
            if "recall_pretrained" in report
            else {}
        ),
        **({"text_loss": report["eval"]["text_loss"]} if "text_loss" in report["eval"] else {}),
        **{f"vqa_{k}": v["accuracy"] for k, v in vqa.items() if k != "all"},
        "pretrain_s": report["wall_s"]["pretrain"],
        "total_s": report["wall_s"]["total"],
    }


def _spread(values: list[float]) -> dict[str, float]:
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values),
            "n": len(values)}  # fmt: skip


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties); None with fewer than 3 points."""
    if len(x) < 3:
        return None
    from scipy.stats import spearmanr

    value = float(spearmanr(x, y).statistic)
    return value if math.isfinite(value) else None


def summarize(study: Study, rows: dict[str, dict[int, dict[str, float]]]) -> dict[str, Any]:
    """Per variant: every measure's mean/min/max over seeds; Spearman(MIR, VQA) over variants."""
    variants = {}
    for v in study.variants:
        per_seed = rows.get(v.name, {})
        if not per_seed:
            continue
        keys = sorted({k for r in per_seed.values() for k in r})
        variants[v.name] = {
            "note": v.note,
            "seeds": sorted(per_seed),
            "per_seed": {str(s): r for s, r in sorted(per_seed.items())},
            **{k: _spread([r[k] for r in per_seed.values() if k in r]) for k in keys},
        }
    names = list(variants)
    mir = [variants[n]["mir"]["mean"] for n in names]
    vqa = [variants[n]["vqa_all"]["mean"] for n in names]
    return {
        "study": study.name,
        "description": study.description,
        "reference": study.reference,
        "variants": variants,
        "spearman_mir_vqa": spearman(mir, vqa),
        "spearman_mir_caption_loss": spearman(
            mir, [variants[n]["caption_loss"]["mean"] for n in names]
        ),
    }


def _cell(stat: dict[str, float], fmt: str) -> str:
    if stat["n"] == 1:
        return format(stat["mean"], fmt)
    return f"{format(stat['mean'], fmt)} [{format(stat['min'], fmt)}, {format(stat['max'], fmt)}]"


def _num(value: float | None) -> str:
    return (
        "undefined (fewer than 3 variants, or a constant measure)"
        if value is None
        else f"{value:.3f}"
    )


def render_markdown(summary: dict[str, Any]) -> str:
    """The study table: mean [min, max] over seeds for every variant."""
    head = ["variant", "seeds", "MIR after PT", "MIR fresh conn.", "caption loss", "VQA all",
            "colour", "shape", "count", "position", "existence", "glyph"]  # fmt: skip
    cols = [("mir", ".3f"), ("mir_fresh", ".3f"), ("caption_loss", ".3f"), ("vqa_all", ".3f"),
            ("vqa_colour", ".2f"), ("vqa_shape", ".2f"), ("vqa_count", ".2f"),
            ("vqa_position", ".2f"), ("vqa_existence", ".2f"), ("vqa_glyph", ".2f")]  # fmt: skip
    lines = [f"# Study `{summary['study']}`", "", summary["description"], "",
             f"Compared with: {summary['reference']}", "",
             "Each cell: mean [min, max] over seeds (lower MIR and caption loss are better).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    for name, v in summary["variants"].items():
        cells = [_cell(v[k], f) if k in v else "-" for k, f in cols]
        lines.append(f"| {name} | {len(v['seeds'])} | " + " | ".join(cells) + " |")
    lines += ["", f"Spearman(MIR, VQA all) over variants: {_num(summary['spearman_mir_vqa'])}",
              f"Spearman(MIR, caption loss) over variants: "
              f"{_num(summary['spearman_mir_caption_loss'])}", ""]  # fmt: skip
    notes = [f"- `{n}`: {v['note']}" for n, v in summary["variants"].items() if v["note"]]
    return "\n".join([*lines, "Variants:", *notes, ""])


def plot_study(summary: dict[str, Any], out_png: Path) -> Path:
    """MIR after pre-training vs held-out VQA after SFT, one point per variant with seed ranges."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from modalign.atomic import atomic_write

    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, v in summary["variants"].items():
        x, y = v["mir"], v["vqa_all"]
        ax.errorbar(x["mean"], y["mean"], xerr=[[x["mean"] - x["min"]], [x["max"] - x["mean"]]],
                    yerr=[[y["mean"] - y["min"]], [y["max"] - y["mean"]]], fmt="o", capsize=3)  # fmt: skip
        ax.annotate(name, (x["mean"], y["mean"]), fontsize="x-small", xytext=(3, 3),
                    textcoords="offset points")  # fmt: skip
    ax.set_xlabel("MIR after pre-training (lower is better aligned)")
    ax.set_ylabel("held-out VQA accuracy after SFT")
    ax.set_title(
        f"study {summary['study']}: Spearman(MIR, VQA) {_num(summary['spearman_mir_vqa'])}"
    )
    ax.grid(True, alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=150)
    return atomic_write(out_png, lambda fh: fh.write(buffer.getvalue()))


def run_study(
    name: str,
    out: Path,
    seeds: Sequence[int],
    report_dir: Path,
    *,
    cycle: CycleConfig | None = None,
    variants: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run (or resume) every (variant, seed) cycle of study `name`; rewrite the report after each."""
    study = STUDIES[name]()
    if cycle is not None:
        study = replace(study, cycle=cycle)
    chosen = [v for v in study.variants if variants is None or v.name in variants]
    rows: dict[str, dict[int, dict[str, float]]] = {}
    summary: dict[str, Any] = {}
    root = Path(out) / study.name
    for seed in seeds:
        data = root / f"data-seed{seed}"
        resources: dict[str, Any] = {}
        if study.prepare is not None:
            print(f"[study {study.name}] preparing seed {seed}", flush=True)
            resources = study.prepare(root, data, replace(study.cycle, seed=seed), seed)
        for variant in chosen:
            cfg = variant_config(study, variant, seed, resources)
            print(f"[study {study.name}] {variant.name} seed {seed}", flush=True)
            report = run_cycle(root / variant.name / f"seed{seed}", cfg, data=data)
            rows.setdefault(variant.name, {})[seed] = _row(report)
            summary = summarize(replace(study, variants=tuple(chosen)), rows)
            write_report(summary, Path(report_dir))
    return summary


def write_report(summary: dict[str, Any], report_dir: Path) -> None:
    """docs/studies/NAME.{json,md,png}, each written atomically."""
    stem = report_dir / summary["study"]
    atomic_write_json(stem.with_suffix(".json"), summary)
    atomic_write_text(stem.with_suffix(".md"), render_markdown(summary))
    plot_study(summary, stem.with_suffix(".png"))
