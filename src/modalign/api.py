"""One call each, for a notebook or a script: `modalign.mir(...)` and `modalign.train_model(...)`
(not `train`: that is the `modalign.train` package).

    import modalign
    result = modalign.mir("llava-hf/llava-1.5-7b-hf", images="val/", texts="passages.txt", n=100)
    result.mir, result.per_layer                     # an MIRResult (lower is better aligned)
    summary = modalign.train_model("./llava-base", "blip_558k.json", "runs/pt",
                                   image_folder="images/", connector="mlp2x_gelu", moca=True,
                                   lr=1e-3, steps=2000)

The settings are the command line's, by the same names (`--lora-r` is `lora_r=`), declared once in
the settings dataclasses (`MIRSettings`, `TrainInputs`, `Recipe` ...); strings are read as the flags
read them ("bfloat16", "cpu", "first:16", "sea:1,labels=cache/"). Everything imports on first use.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["mir", "train_model"]

PathLike = str | os.PathLike[str]


def mir(
    model: Any,
    *,
    images: PathLike | Sequence[Any] | None = None,
    texts: PathLike | Sequence[str] | None = None,
    pairs: PathLike | Sequence[Any] | None = None,
    processor: Any = None,
    **settings: Any,
) -> Any:
    """MIR of `model` (lower is better aligned), as `modalign mir` computes it.

    Args:
        model: a hub id or checkpoint folder; a loaded model (then give `processor`); or an
            adapter (`modalign.models.get_adapter`).
        images / texts: an image folder and a passages file, paired at random (seeded), as on
            the command line; or a list of images (PIL images or paths) and a list of passages of
            the same length, paired as given.
        pairs: a pairs file (JSONL/CSV), or a list of `Pair`s or (image, text) tuples.
        processor: the processor of a loaded `model`.
        **settings: `MIRSettings` fields by their flag names (n, seed, repeats, batch_size,
            template, layers, compat, sqrt, outliers, median, baselines, max_text_tokens,
            device, dtype ...). `n` and `seed` draw from files; lists are used whole.

    Returns:
        The `MIRResult` (its `settings` the resolved ones; `metadata` the model and samples).
    """
    from modalign.data import SampleSource, sample_ids
    from modalign.measure import MIRSettings, run_mir, run_repeats
    from modalign.settings import apply_changes, keyword_changes, keyword_paths

    actions = keyword_paths(MIRSettings, "mir")
    chosen = apply_changes(MIRSettings(progress=False), keyword_changes(settings, actions, "mir",
                                                                        "modalign.mir"))  # fmt: skip
    in_memory = _pairs_in_memory(images, texts, pairs)  # the data are checked before the model
    data = None
    if in_memory is None:
        data = SampleSource.from_args(images=_path(images), texts=_path(texts), pairs=_path(pairs))
    elif chosen.repeats > 1:
        from modalign.errors import ConfigError

        raise ConfigError("modalign.mir: repeats draw subsets from files; give files, or one run")
    adapter = _adapter(model, processor, chosen)
    if data is None:
        result, source, used = (
            run_mir(adapter, in_memory, chosen),
            {"source": "in memory"},
            in_memory,
        )
    else:

        def draw(n: int, seed: int) -> Any:
            return data.sample(n, seed, lazy=True)

        used = draw(chosen.n, chosen.seed)
        if chosen.repeats > 1:
            summary = run_repeats(adapter, draw, chosen)
            result = summary.results[0]
            result.metadata["repeats"] = summary.as_dict()
        else:
            result = run_mir(adapter, used, chosen)
        source = dict(data.description)
    name = model if isinstance(model, str | os.PathLike) else type(adapter.model).__name__
    result.metadata.update({"model": str(name), "model_type": adapter.model.config.model_type,
                            "samples": sample_ids(used), "data": source})  # fmt: skip
    return result


def train_model(
    model: PathLike,
    data: PathLike,
    out: PathLike,
    *,
    stage: str = "pretrain",
    config: PathLike | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Train one stage, as `modalign train` does: the stage's preset (LLaVA's recipe), then
    `config` (a YAML/JSON file, e.g. a run's stage_settings.json), then `settings` by their flag
    names (image_folder, limit, dtype, connector, moca, llm, lora_r, objective, steps, lr,
    mir_every, mir_images ...). Returns the stage's summary (also OUT/stage.json)."""
    import argparse

    from modalign.cli.recipe_options import read_config, recipe_from_options
    from modalign.settings import (
        from_mapping,
        keyword_changes,
        keyword_paths,
        merge_config,
    )
    from modalign.train import Recipe
    from modalign.train.inputs import TrainInputs
    from modalign.train.run import INPUTS, run_training

    inputs_actions = keyword_paths(TrainInputs, INPUTS)
    recipe_actions = keyword_paths(Recipe, "recipe")
    given = {"model": str(model), "data": str(data), "stage": stage, **settings}
    unknown = sorted(set(given) - set(inputs_actions) - set(recipe_actions))
    if unknown:
        from modalign.errors import ConfigError

        raise ConfigError(f"modalign.train_model: unknown setting(s) {', '.join(unknown)}")
    file = read_config(argparse.Namespace(config=Path(config) if config else None), (INPUTS,))
    ins = {k: v for k, v in given.items() if k in inputs_actions}
    changes = keyword_changes(ins, inputs_actions, INPUTS, "modalign.train_model")
    inputs = from_mapping(TrainInputs, merge_config(file.get(INPUTS, {}), changes), INPUTS)
    rec = {k: v for k, v in given.items() if k in recipe_actions}
    flags = keyword_changes(rec, recipe_actions, "recipe", "modalign.train_model")
    recipe = recipe_from_options(argparse.Namespace(), Recipe.defaults(inputs.stage), file, flags)
    return run_training(inputs, recipe, out, config=config)


def _path(value: Any) -> Path | None:
    return Path(value) if isinstance(value, str | os.PathLike) else None


def _adapter(model: Any, processor: Any, settings: Any) -> Any:
    """The adapter `mir` measures through: loaded from a path or id, or around a loaded model."""
    from modalign.models import VLMAdapter, get_adapter, load_adapter

    if isinstance(model, VLMAdapter):
        return model
    if isinstance(model, str | os.PathLike):
        return load_adapter(str(model), device=settings.device, dtype=settings.dtype)
    if processor is None:
        from modalign.errors import ConfigError

        raise ConfigError("modalign.mir: a loaded model needs its processor (processor=...)")
    return get_adapter(model, processor)


def _pairs_in_memory(images: Any, texts: Any, pairs: Any) -> list[Any] | None:
    """Pairs given as Python objects (None when the data are files)."""
    from modalign.data import Pair
    from modalign.data.images import as_rgb, open_rgb
    from modalign.errors import DataError

    def image_of(item: Any) -> Any:
        return open_rgb(item) if isinstance(item, str | os.PathLike) else as_rgb(item)

    if pairs is not None and not isinstance(pairs, str | os.PathLike):
        out = []
        for i, p in enumerate(pairs):
            if isinstance(p, Pair):
                out.append(p)
            elif isinstance(p, tuple) and len(p) == 2:
                out.append(Pair(image_of(p[0]), f"image {i}", str(p[1]), i))
            else:
                raise DataError(f"pairs[{i}]: a Pair or an (image, text) tuple, got {p!r}")
        return out
    listed = [x is not None and not isinstance(x, str | os.PathLike) for x in (images, texts)]
    if not any(listed):
        return None
    if not all(listed) or len(images) != len(texts):
        raise DataError("images and texts as lists go together, of one length (paired as given)")
    return [
        Pair(image_of(im), f"image {i}", str(t), i)
        for i, (im, t) in enumerate(zip(images, texts, strict=True))
    ]
