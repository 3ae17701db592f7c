"""A reference point for one MIR: the same model with its connector re-initialised (the model
before stage-1 alignment), over a few seeds (one random draw is noisy: a random MLP's output scale
varies with the seed). The trained connector is put back afterwards."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from modalign.errors import ConfigError
from modalign.settings import option

__all__ = ["ReferenceSettings", "fresh_connector_reference"]


@dataclass(frozen=True)
class ReferenceSettings:
    """What a MIR is shown beside (`modalign mir --reference fresh`)."""

    reference: str | None = option(
        None, choices=("fresh",),
        help="also score the same model with its connector re-initialised (the model before "
        "alignment), a reference point for the number",
    )  # fmt: skip
    reference_seeds: int = option(3, help="connector seeds of the fresh reference")

    def __post_init__(self) -> None:
        if self.reference_seeds < 1:
            raise ConfigError(f"--reference-seeds must be >= 1, got {self.reference_seeds}")


def fresh_connector_reference(
    adapter: Any, pairs: Sequence[Any], settings: Any, seeds: Sequence[int]
) -> dict[str, Any]:
    """MIR of `adapter`'s model on `pairs` with its connector re-initialised from each seed:
    {"kind", "seeds", "mir": [...], "mean", "min", "max"}. The connector is restored after."""
    from modalign.measure.run import run_mir
    from modalign.methods.connectors import reset_connector
    from modalign.models import model_parts

    if not seeds:
        raise ConfigError("a fresh-connector reference needs at least one seed")
    connector = model_parts(adapter.model).connector
    saved = {k: v.detach().clone() for k, v in connector.state_dict().items()}
    values = []
    try:
        for seed in seeds:
            reset_connector(connector, seed)
            values.append(run_mir(adapter, pairs, settings).mir)
    finally:
        connector.load_state_dict(saved)
    return {"kind": "fresh connector", "seeds": list(seeds), "mir": values,
            "mean": sum(values) / len(values), "min": min(values), "max": max(values)}  # fmt: skip
