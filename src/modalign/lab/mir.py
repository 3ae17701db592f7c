"""MIR of lab models through the package's generic adapter path (no lab special case)."""

from __future__ import annotations

from pathlib import Path

from modalign.data.pairs import Pair
from modalign.lab.world.dataset import load_split


def eval_pairs(data_dir: Path, split: str = "test", n: int = 100, level: int = 3) -> list[Pair]:
    """(image, caption of `level`) pairs from a lab split, the MIR evaluation samples."""
    return [
        Pair(image=r.load_image(), image_id=r.image_id, text=r.captions[level], text_id=i)
        for i, r in enumerate(load_split(data_dir, split, n))
    ]


def mir_of(model, processor, pairs: list[Pair], batch_size: int = 16) -> dict:
    """MIR and per-layer FD via modalign.models.get_adapter + modalign.runner.run_mir."""
    from modalign.models import get_adapter
    from modalign.runner import RunOptions, run_mir

    model.eval()
    result = run_mir(
        get_adapter(model, processor), pairs, RunOptions(batch_size=batch_size, progress=False)
    )
    return {"mir": result.mir, "per_layer": list(result.per_layer), "n": len(pairs)}
