"""The record of model modifications kept in a model's config, so a checkpoint can rebuild them.

    record_extension(model, "moca", {"std": 0.0, ...})    # config.modalign_extensions["moca"]
    recorded_extensions(model.config)                     # {"moca": {...}} (a copy)
    forget_extension(model, "moca")

`save_pretrained` writes the record into config.json (it is a plain JSON-ready attribute of the
config) and `modalign.models.surgery.extensions` reads it back to re-attach each modification on load.
Settings must be JSON-ready (str, int, float, bool, None, lists and dicts of those).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from modalign.errors import ConfigError

__all__ = ["CONFIG_KEY", "forget_extension", "record_extension", "recorded_extensions"]

# Attribute of the model's (top-level) config that holds {extension name: settings}.
CONFIG_KEY = "modalign_extensions"


def recorded_extensions(config: Any) -> dict[str, dict[str, Any]]:
    """{name: settings} recorded in `config` (a config object, or a config.json dict; empty when
    none); a malformed record is an error."""
    raw = (
        config.get(CONFIG_KEY) if isinstance(config, Mapping) else getattr(config, CONFIG_KEY, None)
    )
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Mapping) for k, v in raw.items()
    ):
        raise ConfigError(
            f"config.{CONFIG_KEY} must map extension names to settings dicts, got {raw!r}"
        )
    return {k: copy.deepcopy(dict(v)) for k, v in raw.items()}


def record_extension(model: Any, name: str, settings: Mapping[str, Any]) -> None:
    """Record (or replace) `name`'s settings in `model.config` (refused if not JSON-ready)."""
    settings = dict(settings)
    try:
        json.dumps(settings, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"settings of extension {name!r} are not JSON-ready: {exc}") from None
    records = recorded_extensions(model.config)
    records[name] = settings
    setattr(model.config, CONFIG_KEY, records)


def forget_extension(model: Any, name: str) -> None:
    """Drop `name` from the record; the attribute goes away with the last entry."""
    records = recorded_extensions(model.config)
    records.pop(name, None)
    if records:
        setattr(model.config, CONFIG_KEY, records)
    elif hasattr(model.config, CONFIG_KEY):
        delattr(model.config, CONFIG_KEY)
