"""The named studies: the MIR paper's sweeps (docs/methods.md, E1-E10) and the toolkit's and the
alignment methods' comparisons, in the miniature world.

    modalign lab study NAME --out runs/study --seeds 0 1
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from modalign.methods import LoraSpec
from modalign.registry import Registry
from modalign.train import Recipe
from modalign_lab.pipeline.cycle import CycleConfig
from modalign_lab.studies.study import Study, Variant

STUDIES: Registry[Callable[[], Study]] = Registry("study")

BATCH = 32  # the cycle's pre-training batch size: steps = images / BATCH for one epoch
BIG_TRAIN = 51200  # training images of the data-scale studies (one epoch = 1600 steps)


def recipe_change(**changes: Any) -> Callable[[Recipe, dict[str, Any]], Recipe]:
    """A recipe change: top-level Recipe fields and, under `unlock`/`lrs`, stage fields;
    `lr`, `steps`, `warmup_ratio`, `schedule` change the optimisation."""
    unlock = changes.pop("unlock", None)
    lrs = changes.pop("lrs", None)
    train_changes = {k: changes.pop(k) for k in ("lr", "steps", "warmup_ratio", "schedule")
                     if k in changes}  # fmt: skip

    def change(recipe: Recipe, resources: dict[str, Any] | None = None) -> Recipe:
        stage = recipe.stage
        if unlock is not None:
            stage = replace(stage, unlock=replace(stage.unlock, **unlock))
        if lrs is not None:
            stage = replace(stage, component_lrs={**stage.component_lrs, **lrs})
        train = replace(recipe.train, **train_changes) if train_changes else recipe.train
        return replace(recipe, stage=stage, train=train, **changes)

    return change


def _cycle(**changes: Any) -> Callable[[CycleConfig], CycleConfig]:
    return lambda c: replace(c, **changes)


# Tiny-world sizes of the attention connectors (the real-size defaults are BERT-base / TinyLLaVA).
QFORMER = "qformer:hidden_size=64,num_layers=2,num_heads=4,intermediate_size=256"
RESAMPLER = "resampler:num_queries=9,num_layers=2,num_heads=4,head_dim=16"
LORA = LoraSpec(r=16, alpha=4.0, dropout=0.05)  # alpha / r = 0.25, as the official r=64, a=16
LLM_LR = 1e-4  # the LLM's own rate when it is unlocked in pre-training (connector keeps 1e-3)
BASELINE = Variant("baseline", note="LLaVA-1.5 stage 1: mlp2x_gelu connector only, 1600 steps")


@STUDIES.register("toolkit")
def _toolkit() -> Study:
    return Study(
        name="toolkit",
        description="Pre-training variants of the toolkit: MoCa, every connector, every "
        "LLM-unlock strategy (MIR paper Tables 3-5, E5-E7, in miniature).",
        reference="MIR-main Table 3 (unlock: none > LoRA > former half > all in MIR), Table 4 "
        "(connectors: 2-layer MLP best, Q-Former far worst), Table 5 (MoCa lowers MIR, +1.5 avg)",
        variants=(
            BASELINE,
            Variant("moca", recipe_change(moca=True), "+ MoCa (trained in pre-training and SFT)"),
            Variant("linear", recipe_change(connector="linear")),
            Variant("mlp4x_gelu", recipe_change(connector="mlp4x_gelu")),
            Variant(
                "qformer",
                recipe_change(connector=QFORMER, lr=1e-4),
                "32 queries, no text input; lr 1e-4 as the official Q-Former script",
            ),
            Variant("resampler", recipe_change(connector=RESAMPLER), "9 latents"),
            Variant(
                "pool", recipe_change(connector="pool:grid=2"), "3x3 -> 2x2 average pool + linear"
            ),
            Variant(
                "llm_lora_merged",
                recipe_change(unlock={"llm": "lora", "lora": LORA}, lrs={"lora": 1e-3}),
                "LoRA r16 on every LLM linear, merged after pre-training",
            ),
            Variant(
                "llm_lora_kept",
                recipe_change(
                    unlock={"llm": "lora", "lora": replace(LORA, merge=False)}, lrs={"lora": 1e-3}
                ),
                "LoRA kept as a module, trained on in SFT",
            ),
            Variant(
                "llm_former_half",
                recipe_change(unlock={"llm": "first:2"}, lrs={"llm": LLM_LR}),
                "decoder layers 0-1 of 4 + embeddings, LLM lr 1e-4",
            ),
            Variant(
                "llm_all",
                recipe_change(unlock={"llm": "full"}, lrs={"llm": LLM_LR}),
                "every LLM layer + embeddings + norm + head, LLM lr 1e-4",
            ),
        ),
    )


def _prepare_alignment(root: Path, data: Path, cycle: CycleConfig, seed: int) -> dict[str, Any]:
    """Per seed: a LiT text tower for the base's vision tower, then SEA labels from its patch
    tokens and from 3 x 3 region crops (one per cell); and the oracle labels (the world's truth)
    for the control."""
    import json

    from modalign.assets import default_model_path
    from modalign_lab.pipeline.sea import lit_clip, oracle_labels, sea_labels

    folder = root / f"sea-seed{seed}"

    def labels(name: str, regions: int) -> str:
        choice = folder / name / "choice.json"
        if choice.is_file():
            return json.loads(choice.read_text(encoding="utf-8"))["labels"]
        clip = lit_clip(data, default_model_path(), folder / "clip")
        return sea_labels(data, clip, folder / name, regions=regions)["labels"]

    return {"labels": labels("labels", 0), "region_labels": labels("region-labels", 3),
            "oracle_labels": str(oracle_labels(data, folder / "oracle-labels"))}  # fmt: skip


def _objective(text: str) -> Callable[[Recipe, dict[str, Any]], Recipe]:
    """A variant adding an objective; `{name}` fields are filled from the seed's resources."""

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
            BASELINE,
            Variant(
                "sea",
                _objective("sea:1,labels={labels}"),
                "lambda 1, n 10, 2x2 windows; labels from a LiT text tower on the base's "
                "vision tower, the similarity sign chosen on the val split",
            ),
            Variant(
                "sea_regions",
                _objective("sea:1,labels={region_labels}"),
                "SEA with labels from the same LiT tower's whole-image embedding of each 3 x 3 "
                "cell crop (`sea-labels --regions 3`), sign chosen on val",
            ),
            Variant(
                "sea_oracle",
                _objective("sea:1,labels={oracle_labels}"),
                "control: SEA with the world's true words per cell (colour and shape, or the "
                "glyph): what SEA does with perfect labels",
            ),
            Variant(
                "contrastive",
                _objective("contrastive:1"),
                "equal weights, tau 0.07 learnable",
            ),
            Variant(
                "contrastive_prompt",
                _objective("contrastive:1,prompt=true"),
                "PromptBERT-style wrappers",
            ),
        ),
        prepare=_prepare_alignment,
    )


def _big_world() -> CycleConfig:
    base = CycleConfig()
    return replace(base, sizes={**base.sizes, "train": BIG_TRAIN})


def _one_epoch(images: int, **changes: Any) -> Variant:
    """Pre-training on the first `images` training images, one epoch (nested prefixes)."""
    return Variant(
        f"n{images}",
        recipe_change(steps=images // BATCH, **changes),
        f"{images} images, one epoch ({images // BATCH} steps)",
        cycle=_cycle(pretrain_images=images),
    )


SCALE = (800, 1600, 3200, 6400, 12800, 25600, 51200)


@STUDIES.register("scale")
def _scale() -> Study:
    return Study(
        name="scale",
        description="E1: pre-training data scale, connector only (lr 1e-3): one epoch over "
        "nested prefixes of 51,200 training images.",
        reference="MIR-main Fig 1/6, MIR-supp Table 1: MIR falls steeply then plateaus where "
        "post-SFT accuracy saturates; Pearson(MIR, avg) -0.977, Spearman -0.57; loss and PPL "
        "keep falling",
        paper_mir_spearman=-0.57,
        variants=tuple(_one_epoch(n) for n in SCALE),
        cycle=_big_world(),
    )


@STUDIES.register("scale_unlocked")
def _scale_unlocked() -> Study:
    unlock = {
        "unlock": {"llm": "full", "vision": "from:2"},
        "lrs": {"llm": LLM_LR, "vision": LLM_LR},
    }
    return Study(
        name="scale_unlocked",
        description="E2: pre-training data scale with the last vision layer and the whole LLM "
        "unlocked (lr 1e-4; connector 1e-3), one epoch over nested prefixes.",
        reference="MIR-main Fig 6 row 2: with ViT and LLM unlocked accuracy keeps rising with "
        "data and MIR keeps falling (no plateau)",
        variants=tuple(_one_epoch(n, **unlock) for n in SCALE),
        cycle=_big_world(),
    )


@STUDIES.register("detail")
def _detail() -> Study:
    return Study(
        name="detail",
        description="E3: caption detail in pre-training, level 0 (the counts) to 3 (every "
        "object, position and relation); 1600 steps, connector only.",
        reference="MIR-main Table 1: longer captions give lower MIR and a better average "
        "(Spearman -1)",
        paper_mir_spearman=-1.0,
        variants=tuple(
            Variant(f"level{k}", note=f"captions of level {k}", cycle=_cycle(caption_level=k))
            for k in range(4)
        ),
    )


@STUDIES.register("recipe")
def _recipe() -> Study:
    grid = ((1e-3, 0.03, "cosine"), (1e-3, 0.05, "cosine"), (1e-3, 0.03, "linear"),
            (3e-3, 0.03, "cosine"), (5e-4, 0.03, "cosine"), (3e-4, 0.03, "cosine"))  # fmt: skip
    return Study(
        name="recipe",
        description="E4: pre-training learning rate, warmup and schedule (1600 steps, connector "
        "only), the paper's grid.",
        reference="MIR-main Table 2: a smaller lr gives lower MIR and a better average, 3e-3 is "
        "worst; Spearman(MIR, avg) -0.97",
        paper_mir_spearman=-0.97,
        variants=tuple(
            Variant(f"lr{lr:g}_w{w:g}_{s}", recipe_change(lr=lr, warmup_ratio=w, schedule=s))
            for lr, w, s in grid
        ),
    )


@STUDIES.register("steps")
def _steps() -> Study:
    return Study(
        name="steps",
        description="E9: pre-training length (full cosine schedule each), 4,000 images, "
        "connector only.",
        reference="MIR-main Fig 4: MIR falls and converges during pre-training, before the loss",
        variants=tuple(
            Variant(f"steps{s}", recipe_change(steps=s), f"{s} steps")
            for s in (25, 100, 200, 400, 800, 1600)
        ),
    )


@STUDIES.register("epochs")
def _epochs() -> Study:
    images = 12800
    return Study(
        name="epochs",
        description="E10: one to three epochs over 12,800 images (400 steps per epoch), "
        "connector only; does the loss keep falling while MIR stays flat?",
        reference="MIR-main Fig 5: in a second epoch the loss keeps dropping while MIR is flat "
        "(over-fitting MIR does not reward)",
        variants=tuple(
            Variant(
                f"epochs{e}",
                recipe_change(steps=e * images // BATCH),
                f"{e} epoch(s), {e * images // BATCH} steps",
                cycle=_cycle(pretrain_images=images),
            )
            for e in (1, 2, 3)
        ),
        cycle=_big_world(),
    )


@STUDIES.register("testbed")
def _testbed() -> Study:
    return Study(
        name="testbed",
        description="Is the miniature world a fair test bed? Pre-training from none to the "
        "default (and a bad recipe), each point fine-tuned with the cycle's SFT (250 steps at "
        "1e-4), and at LLaVA's lower rate: does post-SFT accuracy depend on pre-training more "
        "than on the seed?",
        reference="The MIR paper fine-tunes every checkpoint with one SFT recipe (LLaVA-1.5's "
        "665K, lr 2e-5, one epoch), fifty times below the pre-training rate",
        variants=(
            Variant(
                "pt_none", recipe_change(steps=1), "one step at warm-up lr 0: the fresh connector"
            ),
            Variant("pt_200", recipe_change(steps=200), "200 steps (full cosine schedule)"),
            BASELINE,
            Variant("pt_lr3e-3", recipe_change(lr=3e-3), "1600 steps at lr 3e-3 (E4's worst)"),
        ),
        sft_variants=(
            Variant("low_2e-5x250", recipe_change(lr=2e-5), "250 steps at 2e-5 (LLaVA's SFT rate)"),
        ),
    )


def _prepare_vlsa(root: Path, data: Path, cycle: CycleConfig, seed: int) -> dict[str, Any]:
    """Per seed: the tiny VAE (+ a fresh denoiser) and VQ model, trained on the seed's images."""
    from modalign_lab.towers.diffusion import DiffusionSpec, make_diffusion, make_vq

    folder = root / f"vlsa-seed{seed}"
    # the VAE encodes the full-resolution image (VLSA's z = VAE(X)); its size is in the folder's
    # name, so points reconstructing another view are not taken for these (archived records
    # match on the config, which holds the path); the VQ model keeps its 32 px input
    spec = DiffusionSpec.for_world(cycle.image_size)
    diffusion = folder / f"diffusion-{spec.vae_size}px"
    make_diffusion(data, diffusion, spec)
    make_vq(data, folder / "vq")
    return {"diffusion": str(diffusion), "vq": str(folder / "vq")}


def _cognition(recipe: Recipe, resources: dict[str, Any]) -> Recipe:
    """SFT with VLSA's cognition turns: pixel (4 x 4 grid: 4 colours) and VQ (16 codes)."""
    from modalign.methods.vlsa import CognitionSpec

    spec = CognitionSpec(kinds=("pixel", "vq"), probability=0.3, grid=4, vq_model=resources["vq"])
    return replace(recipe, stage=replace(recipe.stage, cognition=spec))


# 288 px images: one 96 px tile per cell of the world
VLSA_GRID = "grid_rows=3,grid_cols=3"
SA_PERCEIVER = f"sa_perceiver:{VLSA_GRID},num_heads=4"


@STUDIES.register("vlsa")
def _vlsa() -> Study:
    return Study(
        name="vlsa",
        description="VLSA in a high-resolution world (288 px images, 1 px glyph dots: legible in "
        "the full-resolution tile, partly in the low-res view; 3 x 3 tiles of the tower's 96 "
        "px): low-res, tiled, SA-Perceiver, + reconstruction, 800 pre-training steps, SFT 1e-3 "
        "x 500 (glyph reading needs it); tiled and SA-Perceiver + reconstruction also "
        "fine-tuned with cognition turns (rows 5 and 6).",
        reference="VLSA Table 3: SA-Perceiver recovers most of the loss from dropping resolution "
        "(DocVQA 45.4 -> 61.8), + reconstruction restores detail tasks (75.5), cognition turns "
        "help alone (row 5) and in full VLSA (row 6)",
        variants=(
            Variant("lowres", note="mlp2x_gelu on the 96 px view: 9 image tokens"),
            Variant(
                "tiled",
                recipe_change(connector=f"tiled:{VLSA_GRID}"),
                "every view's tokens: (1 + 9) x 9 = 90 image tokens",
            ),
            Variant(
                "sa_perceiver",
                recipe_change(connector=SA_PERCEIVER),
                "local cross-attention to the cell's tile: 9 + 1 image tokens",
            ),
            Variant(
                "sa_perceiver_rec",
                _chain(
                    recipe_change(connector=SA_PERCEIVER),
                    _objective(
                        "reconstruction:1,diffusion={diffusion},rank=64,train_denoiser=true"
                    ),
                ),
                "+ reconstruction (VAE on the full 288 px image; the denoiser trains from "
                "scratch with the perceiver: no small pre-trained one exists)",
            ),
        ),
        sft_variants=(
            Variant("cognition", _cognition, "+ pixel / VQ turns in 30% of SFT samples"),
            Variant(
                "long",
                recipe_change(steps=VLSA_LONG_SFT_STEPS),
                f"SFT 1e-3 x {VLSA_LONG_SFT_STEPS} (16 epochs): can the LLM learn to read the "
                "glyph that the tiled tokens carry?",
            ),
        ),
        # Table 3 row (5) is cognition on the any-res model, row (6) on full perception alignment
        sft_only={
            "cognition": ("tiled", "sa_perceiver_rec"),
            "long": ("lowres", "tiled", "sa_perceiver"),
        },
        cycle=_vlsa_cycle(),
        prepare=_prepare_vlsa,
    )


# VLSA compares connectors, so its SFT must be able to learn the detail task: the cycle's SFT
# (1e-4 x 250) leaves glyph reading at 0.13 (chance 0.06) in every study; from the 96 px
# default's pre-training (seed 0), 1e-3 x 500 reads glyphs at 0.83 and 1e-3 x 1000 at 0.98.
VLSA_SFT_LR, VLSA_SFT_STEPS = 1e-3, 500
# 1e-3 x 500 leaves glyph reading near chance (0.12-0.13) for every connector of the 288 px
# world, although a linear probe reads the glyph at 0.96-0.98 from the tiled connector's tokens
# (docs/studies/reports/vlsa-legibility): the longer SFT tests whether reading is learnable at all.
VLSA_LONG_SFT_STEPS = 2000


def _vlsa_cycle() -> CycleConfig:
    """The high-resolution world; pre-training halved to 800 steps (6.4 epochs): the tiled
    variants cost 2-3x the low-res step on 2 CPU cores; SFT at 1e-3 x 500 (see above).

    Glyph dots of 1 px at 288 px: `lab legibility` (a linear probe on the default tower, seed-0
    world) reads the glyph from the cell's tile at 0.99 and from the low-res view's cell at 0.42
    (chance 0.06); with 2 px dots the low-res view already reads it at 0.99 and with 3 px at 1.00,
    so there would be no detail for VLSA to recover."""
    base = CycleConfig()
    pretrain = replace(base.pretrain, train=replace(base.pretrain.train, steps=800))
    sft = replace(base.sft, train=replace(base.sft.train, lr=VLSA_SFT_LR, steps=VLSA_SFT_STEPS))
    return replace(base, image_size=288, glyph_scale=1, pretrain=pretrain, sft=sft)


def _chain(*changes: Callable[[Recipe, dict[str, Any]], Recipe]) -> Callable[..., Recipe]:
    """Recipe changes applied in order."""

    def change(recipe: Recipe, resources: dict[str, Any] | None = None) -> Recipe:
        for c in changes:
            recipe = c(recipe, resources or {})
        return recipe

    return change
