"""Text reports: the one-screen summary and the comparison table."""

from __future__ import annotations

import math

import pytest

from modalign.errors import DataError
from modalign.report import compare_table, summary_table


def test_summary_table_contents(result_factory) -> None:
    data = result_factory(k=4)
    text = summary_table(data)
    lines = text.splitlines()
    assert lines[0].startswith(f"MIR       {data['mir']:.4f}")
    assert "tiny-llava" in lines[1] and lines[2].split() == ["samples", "20"]
    assert "outliers=drop" in text and "sqrt=exact" in text
    header = next(i for i, line in enumerate(lines) if line.startswith("layer"))
    assert lines[header].split() == [
        "layer",
        "FD",
        "share%",
        "n_vision",
        "n_text",
        "outliers",
        "v/t",
    ]
    rows = [line.split() for line in lines[header + 2 :]]
    assert [r[0] for r in rows] == ["1", "2", "3", "4"]
    assert [float(r[1]) for r in rows] == data["per_layer"]
    assert (
        sum(float(r[2]) for r in rows) == 100.0 or abs(sum(float(r[2]) for r in rows) - 100) < 0.3
    )
    assert rows[2][3:] == ["640", "298", "2/1"]
    assert len(lines) < 40  # one screen for a small model


def test_long_settings_wrap(result_factory) -> None:
    data = result_factory(k=2)
    data["settings"] = {f"option_{i}": "a fairly long value " * 2 for i in range(6)}
    lines = summary_table(data).splitlines()
    settings = [line for line in lines[3:] if line.startswith(("settings", " " * 10))]
    assert len(settings) > 1 and all(len(line) <= 100 for line in lines)
    assert " ".join(line.strip() for line in settings).count("option_") == 6


def test_compare_table(result_factory) -> None:
    a, b = result_factory(1.0, k=3, model="A"), result_factory(0.1, k=4, model="B")
    with pytest.raises(DataError, match=r"better covers layers \[1, 2, 3, 4\], base \[1, 2, 3\]"):
        compare_table([a, b], ["base", "better"])  # other layers: refused unless asked
    text = compare_table([a, b], ["base", "better"], allow_mismatch=True)
    assert text.splitlines()[-1].startswith("not like for like: better covers layers")
    lines = text.splitlines()[:-2]
    assert lines[2].split()[:3] == ["base", f"{a['mir']:.4f}", "+0.0000"]
    assert lines[3].split()[:3] == ["better", f"{b['mir']:.4f}", f"{b['mir'] - a['mir']:+.4f}"]
    assert lines[3].split()[-1] == "B"
    assert lines[-1].split() == ["4", "-", "0.25"]  # layer 4 exists only in the second run
    assert lines[-4].split() == ["1", "1", "0.1"]


def test_repeats_shown_in_summary_and_compare(result_factory) -> None:
    a, b = result_factory(k=2, model="A"), result_factory(0.5, k=2, model="B")
    a["metadata"]["repeats"] = {
        "n": 20, "repeats": 5, "mean": 0.61, "std": 0.012, "min": 0.6, "max": 0.63, "mir": [0.6] * 5
    }  # fmt: skip
    text = summary_table(a)
    assert "repeats   0.6100 +- 0.0120 (std; range 0.6000 .. 0.6300; 5 subsets of 20)" in text
    lines = compare_table([a, b], ["a", "b"]).splitlines()
    assert "mean +- std (R)" in lines[0]
    assert "0.6100 +- 0.0120 (5)" in lines[2] and lines[3].split()[3] == "-"
    assert "mean +- std" not in compare_table([b, b], ["x", "y"])
    a["metadata"]["repeats"]["std"] = "bad"
    assert "repeats" not in summary_table(a)


def test_results_that_contradict_themselves_or_differ_in_settings_are_refused(result_factory):
    """A MIR that is not log10 of its per-layer sum, a negative per-layer Fréchet distance, or
    two runs measured with other outlier rules / square roots / templates: refused."""
    from modalign.metrics import MIRResult

    bad = result_factory()
    bad["mir"] += 0.5
    with pytest.raises(DataError, match="is not log10 of the summed 'per_layer'"):
        MIRResult.load(bad)
    negative = result_factory()
    negative["per_layer"][0] = -1.0
    negative["mir"] = math.log10(sum(negative["per_layer"]))
    with pytest.raises(DataError, match="a per-layer distance is negative"):
        MIRResult.load(negative)
    negative["settings"]["sqrt"] = "official"  # tr(S_v S_t) can make a layer negative: allowed
    assert MIRResult.load(negative).per_layer[0] == -1.0
    a, b = result_factory(), result_factory(0.5)
    for key, value in (("outliers", "median"), ("sqrt", "newton_schulz"), ("template", "plain")):
        changed = {**b, "settings": {**b["settings"], key: value}}
        with pytest.raises(DataError, match=rf"measured differently \({key}="):
            compare_table([a, changed], ["a", "b"])
