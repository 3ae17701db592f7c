"""One training stage from its settings, end to end: what `modalign train` and `modalign.train`
both run. Inputs are checked (outputs not on inputs, loggers installed, every image opens) before
the model loads; nothing is written before the stage's own checks (`run_stage`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modalign.train.inputs import TrainInputs
from modalign.train.recipe import Recipe

__all__ = ["INPUTS", "run_training"]

INPUTS = "inputs"  # the key of the inputs in the recorded settings (and their flags' namespace)


def run_training(
    inputs: TrainInputs, recipe: Recipe, out: str | Path, *, config: str | Path | None = None
) -> dict[str, Any]:
    """Train one stage as `recipe` says on `inputs` into `out`; returns the stage's summary (also
    out/stage.json). `config`: the settings file the caller read, if any (never overwritten)."""
    from modalign.atomic import check_not_an_input, check_writable
    from modalign.data.conversations import check_images, load_conversations
    from modalign.models.loading import load_model, load_processor
    from modalign.train.fit import check_loggers
    from modalign.train.recipe import prepare, train_stage

    out = Path(out)
    check_writable(out / "stage.json", "--out")
    reads = [inputs.model, inputs.data, inputs.image_folder, inputs.mir_images, inputs.mir_texts,
             inputs.mir_pairs, config]  # fmt: skip
    check_not_an_input(out, "--out", reads, folder=True)
    check_loggers(recipe.train.report_to)  # a missing logger: one line, before the data or model
    conversations = load_conversations(
        inputs.data, inputs.image_folder, require_image=inputs.stage == "pretrain",
        limit=inputs.limit,
    )  # fmt: skip
    check_images(conversations)  # every referenced image opens, before the model loads
    recipe = recipe.resolved(len(conversations))
    probe = None
    if recipe.monitor is not None:
        from modalign.data import SampleSource

        source = SampleSource.from_args(images=inputs.mir_images, texts=inputs.mir_texts,
                                        pairs=inputs.mir_pairs)  # fmt: skip
        probe = source.sample(recipe.monitor.n, seed=0)
    model = load_model(inputs.model, "cpu", inputs.dtype)
    processor = load_processor(inputs.model)
    model, processor = prepare(model, processor, recipe)
    return train_stage(model, processor, conversations, recipe, out, probe=probe,
                       record={INPUTS: inputs.absolute().to_dict()})  # fmt: skip
