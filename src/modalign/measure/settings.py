"""MIRSettings: every setting of an MIR run over a model, declared once.

Each field carries its help, choices and default (`modalign.settings.option`), so the flags of
`modalign mir` (and the `--config` file keys) are generated from it. `resolve()` turns what the
user gave into concrete settings before any work (the `--compat official` preset, the template
default, the combinations refused), and `record()` is what a result's `settings` holds.

    settings = MIRSettings(compat="official", n=200).resolve()
    settings.sqrt, settings.outliers, settings.template        # ('official', 'median', 'official')
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from modalign.data.templates import measuring_templates
from modalign.errors import ConfigError
from modalign.measure.layers import Layers
from modalign.metrics.median import MEDIAN_MODES
from modalign.metrics.outliers import OUTLIER_MODES
from modalign.metrics.sqrt_backends import SQRT_BACKENDS, SqrtBackend, sqrt_backend
from modalign.settings import check_choices, option

__all__ = ["COMPAT_PRESETS", "TEMPLATES", "MIRSettings"]

# the sequence layouts an adapter measures with (the one table: modalign.data.templates)
TEMPLATES = measuring_templates()
# --compat NAME: what it sets where the user gave nothing (explicit settings win)
COMPAT_PRESETS: dict[str, dict[str, str]] = {
    "none": {"sqrt": "exact", "outliers": "drop", "template": "chat"},
    "official": {"sqrt": "official", "outliers": "median", "template": "official"},
}
PRESET = tuple(COMPAT_PRESETS["none"])  # the fields a preset fills: None until resolved
# what a token-file run (`modalign mir --tokens`) records: no model, no draw
TOKEN_RUN = ("compat", "sqrt", "outliers", "median", "baselines", "baseline_tokens", "seed")


@dataclass(frozen=True)
class MIRSettings:
    """How an MIR run over a model is done (everything but the model and the data).

    Args (fields): see each field's help; `template`, `sqrt` and `outliers` are None until
    `resolve()` fills them from `compat`.

    >>> s = MIRSettings(compat="official", sqrt="exact").resolve()
    >>> s.sqrt, s.outliers, s.template       # explicit sqrt wins; the rest from the preset
    ('exact', 'median', 'official')
    """

    # the probe draw
    n: int = option(100, help="number of pairs", other_flags=("--num-samples",))
    seed: int = option(0, help="seed of the pair selection (and of the baselines' token sample)")
    repeats: int = option(
        1, help="MIR on R seeded subsets of N (seeds SEED .. SEED+R-1): mean, range"
    )
    # the forward passes
    batch_size: int = option(8, help="samples per forward pass")
    template: str | None = option(
        None,
        choices=TEMPLATES,
        help="sequence layout: the model's chat template with the passage as the assistant turn "
        "(default), plain = BOS + image tokens + passage tokens, official = the official MIR "
        "protocol (default with --compat official)",
    )
    max_text_tokens: int | None = option(None, help="truncate longer passages")
    layers: Layers | None = option(
        None, metavar="LAYERS", help="decoder layers, e.g. '1-8,12' (default: all)"
    )
    device: str | None = option(None, help="cpu, cuda, cuda:1 ... (default: auto)")
    dtype: str = option(
        "auto",
        help="auto|float32|bfloat16|float16 (default: auto = bfloat16 on CUDA, else float32)",
    )
    # the MIR math
    compat: str = option(
        "none",
        choices=tuple(COMPAT_PRESETS),
        help="'official' reproduces the official MIR code (median outliers, tr(S_v S_t), the "
        "official template); flags given explicitly win",
    )
    sqrt: str | None = option(
        None,
        choices=SQRT_BACKENDS.names(),
        help="trace-square-root backend (default: exact; official with --compat official)",
    )
    outliers: str | None = option(
        None,
        choices=OUTLIER_MODES,
        help="3-sigma norm outlier handling (default: drop; median with --compat official)",
    )
    median: str = option(
        "exact",
        choices=MEDIAN_MODES,
        help="per-dimension median of --outliers median: exact (default; may need one more pass "
        "over the samples) or estimate (from a seeded sample of 4096 tokens, one pass)",
    )
    baselines: bool = option(
        False,
        help="also MMD, KID (plain and layer-wise) and centroid gaps (model runs: on a uniform "
        "sample of --baseline-tokens tokens per layer and modality, from the same forward "
        "passes; with --repeats, per subset and their spread)",
    )
    baseline_tokens: int = option(
        2048, help="tokens per layer and modality the baselines are computed on"
    )
    progress: bool = option(True, cli=False, help="show progress bars")

    def __post_init__(self) -> None:
        if self.layers is not None and not isinstance(self.layers, Layers):
            object.__setattr__(self, "layers", Layers.coerce(self.layers))
        check_choices(self)
        for name in ("n", "seed", "repeats", "batch_size", "max_text_tokens", "baseline_tokens"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"--{_flag(name)} must be an integer, got {value!r}")
        for name in ("n", "repeats", "batch_size", "max_text_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{_flag(name)} must be >= 1, got {value}")
        if self.baseline_tokens < 2:
            raise ConfigError(f"--baseline-tokens must be >= 2, got {self.baseline_tokens}")

    def resolve(
        self, *, n: int | None = None, device: str | None = None, dtype: str | None = None
    ) -> MIRSettings:
        """Concrete settings: the `compat` preset fills what was not given, combinations that
        cannot mean anything are refused (ConfigError, one line). Idempotent.

        Args:
            n: the number of pairs actually scored, when known (it replaces `n`).
            device, dtype: where the model actually runs, once it is loaded.

        Returns:
            A copy whose `template`, `sqrt` and `outliers` are set.
        """
        preset = COMPAT_PRESETS[self.compat]
        changes: dict[str, Any] = {k: preset[k] for k in PRESET if getattr(self, k) is None}
        changes.update(
            {k: v for k, v in (("n", n), ("device", device), ("dtype", dtype)) if v is not None}
        )
        out = dataclasses.replace(self, **changes)
        if out.median == "estimate" and out.outliers != "median":
            raise ConfigError(
                f"--median estimate applies to --outliers median only (outliers: {out.outliers})"
            )
        return out

    @property
    def backend(self) -> SqrtBackend:
        """The trace-square-root backend (resolved settings only)."""
        if self.sqrt is None:
            raise ConfigError("MIRSettings.backend: resolve() the settings first")
        return sqrt_backend(self.sqrt)

    def record(self, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The run settings as a result records them (`MIRResult.settings`, with the
        accumulator's own): every field but `progress`, or only `keys`."""
        if self.sqrt is None or self.outliers is None or self.template is None:
            raise ConfigError("MIRSettings.record: resolve() the settings first")
        out = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "progress"
        }
        out["layers"] = list(self.layers) if self.layers is not None else None
        return {k: out[k] for k in keys} if keys is not None else out


def _flag(name: str) -> str:
    return name.replace("_", "-")
