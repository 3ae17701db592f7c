"""MIR of lab models through the package's generic adapter path (no lab special case)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from modalign.data import Pair
from modalign.errors import ConfigError
from modalign_lab.towers.llava import reset_connector
from modalign_lab.world.dataset import load_split


def eval_pairs(data_dir: Path, split: str = "test", n: int = 100, level: int = 3) -> list[Pair]:
    """(image, caption of `level`) pairs from a lab split, the MIR evaluation samples."""
    return [
        Pair(image=r.load_image(), image_id=r.image_id, text=r.captions[level], text_id=i)
        for i, r in enumerate(load_split(data_dir, split, n))
    ]


def mir_of(model, processor, pairs: list[Pair], batch_size: int = 16) -> dict:
    """MIR and per-layer FD via modalign.models.get_adapter + modalign.measure.run.run_mir."""
    from modalign.measure import RunOptions, run_mir
    from modalign.models import get_adapter

    model.eval()
    result = run_mir(
        get_adapter(model, processor), pairs, RunOptions(batch_size=batch_size, progress=False)
    )
    return {"mir": result.mir, "per_layer": list(result.per_layer), "n": len(pairs)}


def fresh_connector_mir(model, processor, pairs: list[Pair], seeds: Sequence[int]) -> dict:
    """MIR of `model` with its connector re-initialised from each seed (the pre-stage-1 model).

    The trained connector is restored afterwards. One random draw is noisy (the output scale of a
    random MLP varies with the seed), so the baseline is a spread over several seeds.
    """
    if not seeds:
        raise ConfigError("fresh_connector_mir needs at least one seed")
    proj = model.model.multi_modal_projector
    saved = {k: v.clone() for k, v in proj.state_dict().items()}
    per_seed = []
    try:
        for seed in seeds:
            reset_connector(model, seed)
            per_seed.append({"seed": seed, **mir_of(model, processor, pairs)})
    finally:
        proj.load_state_dict(saved)
    values = [r["mir"] for r in per_seed]
    return {
        "mir_mean": sum(values) / len(values),
        "mir_min": min(values),
        "mir_max": max(values),
        "per_seed": per_seed,
    }
