"""MIRSettings: declared once, resolved once before any work, recorded once in the result."""

from __future__ import annotations

import dataclasses

import pytest

from modalign.errors import ConfigError
from modalign.measure import Layers, MIRSettings, RunOptions, run_mir
from modalign.measure.settings import COMPAT_PRESETS, TEMPLATES, TOKEN_RUN
from modalign.metrics import MIRAccumulator
from modalign.models import load_adapter
from modalign.testing.tiny_vlms import build_tiny
from tests.models.conftest import make_pairs


def test_defaults_and_the_official_preset():
    plain = MIRSettings().resolve()
    assert (plain.sqrt, plain.outliers, plain.template) == ("exact", "drop", "chat")
    official = MIRSettings(compat="official").resolve()
    assert (official.sqrt, official.outliers, official.template) == ("official", "median",
                                                                      "official")  # fmt: skip
    assert set(COMPAT_PRESETS["official"]) == {"sqrt", "outliers", "template"}


@pytest.mark.parametrize(
    ("given", "want"),
    [
        ({"sqrt": "exact"}, ("exact", "median", "official")),
        ({"outliers": "drop"}, ("official", "drop", "official")),
        ({"template": "chat"}, ("official", "median", "chat")),
        ({"sqrt": "scipy", "outliers": "none", "template": "plain"}, ("scipy", "none", "plain")),
    ],
)
def test_explicit_settings_win_over_the_preset(given, want):
    s = MIRSettings(compat="official", **given).resolve()
    assert (s.sqrt, s.outliers, s.template) == want
    assert s.resolve() == s  # idempotent
    assert MIRSettings(compat="official", **given).sqrt == given.get("sqrt")  # frozen input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "--n must be >= 1, got 0"),
        ({"repeats": 0}, "--repeats must be >= 1"),
        ({"batch_size": 0}, "--batch-size must be >= 1"),
        ({"max_text_tokens": 0}, "--max-text-tokens must be >= 1"),
        ({"baseline_tokens": 1}, "--baseline-tokens must be >= 2"),
        ({"n": "3"}, "--n must be an integer"),
        ({"sqrt": "magic"}, "sqrt: 'magic' is not one of"),
        ({"compat": "paper"}, "compat: 'paper' is not one of: none, official"),
        ({"template": "chatml"}, "template: 'chatml' is not one of: chat, plain, official"),
        ({"layers": "1-x"}, "--layers: cannot parse '1-x'"),
    ],
)
def test_bad_values_are_refused_on_construction(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        MIRSettings(**kwargs)


def test_combinations_that_mean_nothing_are_refused_in_one_line():
    with pytest.raises(ConfigError) as info:
        MIRSettings(median="estimate").resolve()
    assert str(info.value) == (
        "--median estimate applies to --outliers median only (outliers: drop)"
    )
    assert MIRSettings(median="estimate", compat="official").resolve().median == "estimate"


def test_layers_parse_and_record_as_a_list():
    assert MIRSettings(layers=[2, 3]).layers == Layers((2, 3))
    assert MIRSettings(layers="1-3,8").layers == (1, 2, 3, 8)
    assert MIRSettings(layers="all").layers is None
    with pytest.raises(ConfigError, match="is not a layer selection"):
        Layers.coerce([1.5])
    assert MIRSettings(layers=(4,)).resolve().record()["layers"] == [4]


def test_record_holds_every_setting_once_resolved():
    with pytest.raises(ConfigError, match="resolve"):
        MIRSettings().record()
    record = MIRSettings(seed=3).resolve(n=7, device="cpu", dtype="float32").record()
    fields = {f.name for f in dataclasses.fields(MIRSettings)} - {"progress"}
    assert set(record) == fields
    # the keys results carried before (written then by three layers) are all still there
    assert {"template", "batch_size", "max_text_tokens", "n", "seed", "repeats", "compat",
            "device", "dtype", "sqrt", "outliers", "median"} <= set(record)  # fmt: skip
    assert (record["n"], record["seed"], record["device"]) == (7, 3, "cpu")
    assert set(TOKEN_RUN) <= set(record)


def test_former_name_and_the_adapters_templates():
    """`RunOptions` is the settings' former name; the templates offered are those an adapter
    builds rows for (both from the one table, `modalign.data.templates`)."""
    from modalign.models import VLMAdapter

    assert RunOptions is MIRSettings
    assert all(callable(getattr(VLMAdapter, f"_{name}_row")) for name in TEMPLATES)


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    return load_adapter(str(build_tiny("llava", tmp_path_factory.mktemp("s") / "llava")), "cpu")


def test_the_result_records_the_resolved_settings_once(llava):
    """`run_mir` resolves the settings (n: the pairs scored; device and dtype: the model's)
    and the result's settings are exactly the accumulator's record plus the resolved record."""
    pairs = make_pairs(5)
    given = MIRSettings(compat="official", sqrt="exact", n=50, seed=4, batch_size=2,
                        layers=[2], progress=False)  # fmt: skip
    result = run_mir(llava, pairs, given)
    resolved = given.resolve(n=5, device="cpu", dtype="float32")
    acc = MIRAccumulator(1, outliers=resolved.outliers, median=resolved.median)
    assert result.settings == {**acc.record(resolved.backend), **resolved.record()}
    assert result.settings["template"] == "official" and result.settings["layers"] == [2]
    assert result.settings["passes"] == 1 and result.layers == [2]


def test_baselines_follow_the_settings(llava):
    pairs = make_pairs(4)
    plain = run_mir(llava, pairs, MIRSettings(progress=False))
    assert "baselines" not in plain.metadata
    with_b = run_mir(llava, pairs, MIRSettings(baselines=True, baseline_tokens=16, seed=1,
                                               progress=False))  # fmt: skip
    report = with_b.metadata["baselines"]
    assert report["tokens_per_set_max"] == 16 and max(report["sampled_tokens"]) <= 16
    assert with_b.mir == plain.mir  # same forward passes, same MIR
    assert with_b.settings["baselines"] is True and with_b.settings["baseline_tokens"] == 16
