"""validate(): cached per checkpoint (reused, invalidated by model, data and settings changes),
resumable after a kill, failures reported, correlations per group against evidence.correlate."""

from __future__ import annotations

import pytest
from PIL import Image

from modalign.data.pairs import Pair
from modalign.evidence.checkpoints import Checkpoint
from modalign.evidence.correlate import correlations
from modalign.evidence.validate import POOLED, ValidateSettings, validate

MIRS = {"a": 1.0, "b": 1.4, "c": 0.7, "d": 1.1}


def _pairs(colour="red"):
    return [Pair(Image.new("RGB", (8, 8), colour), f"i{k}", f"caption {k}", k) for k in range(4)]


class FakeMeasure:
    """Records which models were measured; MIR from the table, caption loss = MIR / 2."""

    def __init__(self, fail=(), interrupt_at=None):
        self.calls: list[str] = []
        self.fail, self.interrupt_at = set(fail), interrupt_at

    def __call__(self, model, pairs, settings):
        name = model.rsplit("/", 1)[-1]
        if name == self.interrupt_at:
            raise KeyboardInterrupt
        self.calls.append(name)
        if name in self.fail:
            raise OSError(f"cannot load {name}")
        mir = MIRS[name] + (0.01 if settings.template == "plain" else 0.0)
        return {"mir": {"mir": mir}, "caption": {"caption_loss": mir / 2, "perplexity": 2.0}}


def _checkpoints(tmp_path, scores=(0.6, 0.5, 0.7, 0.55), group="all"):
    out = []
    for name, score in zip("abcd", scores, strict=True):
        if not (tmp_path / name).is_dir():
            (tmp_path / name).mkdir()
            (tmp_path / name / "config.json").write_text("{}")
        out.append(Checkpoint(str(tmp_path / name), score, group))
    return out


def _run(tmp_path, measure, checkpoints=None, pairs=None, settings=None):
    return validate(checkpoints or _checkpoints(tmp_path), pairs or _pairs(),
                    settings or ValidateSettings(), tmp_path / "cache", resamples=50,
                    log=lambda _: None, measure=measure)  # fmt: skip


def test_correlations_per_checkpoint_measures(tmp_path):
    report = _run(tmp_path, FakeMeasure())
    table = report["correlations"]["all"]
    want = correlations([1.0, 1.4, 0.7, 1.1], [0.6, 0.5, 0.7, 0.55])
    assert {k: table["mir"][k] for k in want} == pytest.approx(want)
    assert table["mir"]["n"] == 4 and table["caption_loss"]["spearman"] == want["spearman"]
    lo, hi = table["mir"]["ci"]["spearman"]
    assert lo <= table["mir"]["spearman"] <= hi
    assert report["warnings"] == []


def test_cache_is_reused_and_invalidated_by_settings_data_and_weights(tmp_path):
    measure = FakeMeasure()
    _run(tmp_path, measure)
    assert measure.calls == ["a", "b", "c", "d"]
    _run(tmp_path, measure)  # same everything: all four from the cache
    assert len(measure.calls) == 4
    _run(tmp_path, measure, settings=ValidateSettings(batch_size=2))  # does not change numbers
    assert len(measure.calls) == 4
    report = _run(tmp_path, measure, settings=ValidateSettings(template="plain"))
    assert measure.calls[4:] == ["a", "b", "c", "d"]
    assert report["checkpoints"][0]["measures"]["mir"] == pytest.approx(1.01)
    _run(tmp_path, measure, pairs=_pairs("blue"))  # other probe images
    assert len(measure.calls) == 12
    (tmp_path / "b" / "model.safetensors").write_bytes(b"new weights")  # b retrained in place
    _run(tmp_path, measure)
    assert measure.calls[12:] == ["b"]


def test_a_killed_run_resumes_after_the_last_finished_checkpoint(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, FakeMeasure(interrupt_at="c"))
    measure = FakeMeasure()
    report = _run(tmp_path, measure)
    assert measure.calls == ["c", "d"]
    assert all("measures" in r for r in report["checkpoints"])


def test_a_failing_checkpoint_is_reported_and_the_run_goes_on(tmp_path):
    measure = FakeMeasure(fail={"b"})
    report = _run(tmp_path, measure)
    rows = report["checkpoints"]
    assert "cannot load b" in rows[1]["error"] and "measures" not in rows[1]
    assert report["correlations"]["all"]["mir"]["n"] == 3
    assert "1 checkpoint(s) failed" in report["warnings"][0]
    retry = FakeMeasure()
    _run(tmp_path, retry)  # failures are not cached: retried
    assert retry.calls == ["b"]


def test_constant_scores_warn_and_give_no_correlation(tmp_path):
    report = _run(tmp_path, FakeMeasure(), checkpoints=_checkpoints(tmp_path, (0.5,) * 4))
    assert "constant scores" in report["warnings"][0]
    assert report["correlations"]["all"]["mir"]["spearman"] is None


def test_groups_get_their_own_and_a_pooled_correlation(tmp_path):
    cks = _checkpoints(tmp_path)
    cks = [Checkpoint(c.model, c.score, "g1") for c in cks[:3]] + [
        Checkpoint(c.model, c.score + 0.1, "g2") for c in cks[:3]
    ]
    report = _run(tmp_path, FakeMeasure(), checkpoints=cks)
    assert list(report["correlations"]) == ["g1", "g2", POOLED]
    assert report["correlations"][POOLED]["mir"]["n"] == 6
    g1 = correlations([1.0, 1.4, 0.7], [0.6, 0.5, 0.7])["kendall"]
    assert report["correlations"]["g1"]["mir"]["kendall"] == pytest.approx(g1)
