import json
import math
import warnings

import numpy as np
import pytest
import torch

from modalign.errors import MetricError
from modalign.metrics import MIRAccumulator, MIRResult, compute_mir

from .reference import handle_outliers, mir_reference


def _layers(seed: int, k: int = 3, n_v: int = 400, n_t: int = 150, d: int = 12, spikes: int = 5):
    """Per-layer vision/text tokens with a few massive-norm vision outliers per layer."""
    g = torch.Generator().manual_seed(seed)
    vision, text = [], []
    for i in range(k):
        v = torch.randn(n_v, d, generator=g, dtype=torch.float64) * (1 + i) + 2.0
        v[:spikes] *= 40.0  # outliers
        t = torch.randn(n_t, d, generator=g, dtype=torch.float64) * (2 + i) + 0.5
        t[-1] *= 30.0
        vision.append(v)
        text.append(t)
    return vision, text


@pytest.mark.parametrize("mode", ["drop", "median", "none"])
def test_matches_independent_reference(mode):
    vision, text = _layers(0)
    ref_mir, ref_layers = mir_reference(
        [v.numpy() for v in vision], [t.numpy() for t in text], mode
    )
    res = compute_mir(vision, text, outliers=mode)
    assert res.mir == pytest.approx(ref_mir, rel=1e-9)
    np.testing.assert_allclose(res.per_layer, ref_layers, rtol=1e-8)
    expect_out = [handle_outliers(v.numpy(), mode)[1] for v in vision]
    assert res.outliers_vision == expect_out
    if mode == "drop":
        assert res.n_vision == [400 - o for o in expect_out]
        assert all(o >= 5 for o in expect_out)
    assert res.settings["outliers"] == mode


def test_streaming_batches_equal_one_batch():
    vision, text = _layers(1)
    one = compute_mir(vision, text)
    acc = MIRAccumulator(3)
    for vs, ts in zip(
        zip(*[v.chunk(9) for v in vision], strict=False),
        zip(*[t.chunk(9) for t in text], strict=False),
        strict=True,
    ):
        acc.update(list(vs), list(ts))
    assert not acc.needs_another_pass
    streamed = acc.compute()
    assert streamed.mir == pytest.approx(one.mir, rel=1e-12)
    np.testing.assert_allclose(streamed.per_layer, one.per_layer, rtol=1e-10)


@pytest.mark.parametrize("mode", ["drop", "median"])
def test_tail_overflow_triggers_exact_second_pass(mode):
    vision, text = _layers(2, spikes=20)
    ref = compute_mir(vision, text, outliers=mode)  # default tails hold all outliers
    acc = MIRAccumulator(3, outliers=mode, tail_capacity=4)
    batches = list(
        zip(
            zip(*[v.chunk(8) for v in vision], strict=False),
            zip(*[t.chunk(8) for t in text], strict=False),
            strict=True,
        )
    )
    for vs, ts in batches:
        acc.update(list(vs), list(ts))
    assert acc.needs_another_pass
    with pytest.raises(RuntimeError, match="another pass"):
        acc.compute()
    acc.begin_next_pass()
    for vs, ts in batches:
        acc.update(list(vs), list(ts))
    res = acc.compute()
    assert res.mir == pytest.approx(ref.mir, rel=1e-10)
    assert res.outliers_vision == ref.outliers_vision


def test_second_pass_must_see_the_same_tokens():
    vision, text = _layers(3, spikes=20)
    acc = MIRAccumulator(3, tail_capacity=2)
    acc.update(vision, text)
    acc.begin_next_pass()
    acc.update([v[:100] for v in vision], text)
    with pytest.raises(ValueError, match="same tokens"):
        acc.compute()


def test_result_fields_and_json_roundtrip(tmp_path):
    vision, text = _layers(4)
    res = compute_mir(vision, text, layer_ids=[1, 2, 3])
    assert res.layers == [1, 2, 3]
    assert math.isclose(10**res.mir, sum(res.per_layer), rel_tol=1e-12)
    alpha = [1 / float(t.norm(dim=1).mean()) for t in text]
    np.testing.assert_allclose(res.alpha, alpha, rtol=1e-12)
    path = res.to_json(tmp_path / "sub" / "r.json")
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temp files left
    data = json.loads(path.read_text())
    assert {"mir", "per_layer", "settings", "layers"} <= set(data)
    back = MIRResult.from_json(path)
    assert back == res
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        MIRResult.from_json(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"mir": 1.0}')
    with pytest.raises(ValueError, match="missing keys"):
        MIRResult.from_json(tmp_path / "other.json")


def test_float32_and_float64_inputs_agree():
    vision, text = _layers(5)
    a = compute_mir(vision, text)
    b = compute_mir([v.float() for v in vision], [t.float() for t in text])
    assert b.mir == pytest.approx(a.mir, rel=1e-5)


def test_official_compat_warns_and_can_fail_loudly():
    vision, text = _layers(6)
    with pytest.warns(UserWarning, match="official"):
        res = compute_mir(vision, text, sqrt="official", outliers="median")
    assert res.settings["sqrt"] == "official"
    # vision spread along the text's main direction makes tr(S_v S_t) dominate: with
    # -2 tr(S_v S_t) in place of -2 tr((S_v S_t)^1/2) the sum goes negative (official code:
    # math.log(sum, 10) raises 'math domain error')
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([1.0, 0.2, 0.2, 0.2])
    text_ = [torch.randn(300, 4, generator=g) * scale]
    vision_ = [torch.randn(300, 4, generator=g) * scale * 5]
    assert compute_mir(vision_, text_).mir > 0  # the true FD is fine
    with pytest.raises(MetricError, match="math domain error"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compute_mir(vision_, text_, sqrt="official", outliers="none")


# ----------------------------------------------------------------------------- bad input
def _ok(n=10, d=4):
    return [torch.randn(n, d) + 1]


@pytest.mark.parametrize(
    ("vision", "text", "match"),
    [
        ([torch.empty(0, 4)], _ok(), r"layer 0: no vision tokens"),
        (_ok(), [torch.empty(0, 4)], r"layer 0: no text tokens"),
        ([torch.ones(1, 4)], _ok(), r"layer 0: 1 vision token\(s\).*at least 2"),
        (_ok(), [torch.ones(1, 4)], r"layer 0: 1 text token\(s\).*at least 2"),
        ([torch.full((5, 4), float("nan"))], _ok(), r"layer 0, vision: 5 token\(s\) contain NaN"),
        (_ok(), [torch.tensor([[1.0, float("inf"), 0, 0]] * 3)], r"layer 0, text: 3 token\(s\)"),
        (_ok(d=4), _ok(d=5), r"layer 0, text: hidden size 5 differs from 4"),
        (_ok(), [torch.zeros(6, 4)], r"layer 0: text tokens all have zero norm"),
        ([torch.ones(3)], _ok(), r"layer 0, vision: expected a \(n, d\) tensor"),
        (_ok() * 2, _ok(), r"text: got 1 layers, expected 2"),
    ],
)
def test_bad_input_gives_clear_errors(vision, text, match):
    with pytest.raises(ValueError, match=match):
        compute_mir(vision, text)


def test_constructor_errors():
    with pytest.raises(ValueError, match="outliers must be one of"):
        MIRAccumulator(2, outliers="clip")
    with pytest.raises(ValueError, match="layer ids"):
        MIRAccumulator(2, layer_ids=[1])
    with pytest.raises(ValueError, match="no tokens"):
        MIRAccumulator(1).compute()


# ----------------------------------------------------------------------------- the pass loop
def _batches(vision, text, chunks: int = 8):
    return list(
        zip(
            zip(*[v.chunk(chunks) for v in vision], strict=False),
            zip(*[t.chunk(chunks) for t in text], strict=False),
            strict=True,
        )
    )


@pytest.mark.parametrize(("mode", "tail", "passes"), [("drop", 4, 2), ("median", 4, 2),
                                                      ("drop", 512, 1)])  # fmt: skip
def test_accumulate_runs_every_pass_and_equals_the_steps(mode, tail, passes):
    """accumulate() feeds as many passes as the data needs (tail overflow: 2) and gives what
    driving the passes by hand gives, and what every token in memory gives."""
    vision, text = _layers(2, spikes=20)
    batches = _batches(vision, text)
    fed = []

    def feed(acc: MIRAccumulator) -> None:
        fed.append(acc.pass_index)
        for vs, ts in batches:
            acc.update(list(vs), list(ts))

    got = MIRAccumulator(3, outliers=mode, tail_capacity=tail).accumulate(feed)
    assert fed == list(range(passes)) and got.settings["passes"] == passes
    steps = MIRAccumulator(3, outliers=mode, tail_capacity=tail)
    for vs, ts in batches:
        steps.update(list(vs), list(ts))
    while steps.needs_another_pass:
        steps.begin_next_pass()
        for vs, ts in batches:
            steps.update(list(vs), list(ts))
    assert got == steps.compute()
    ref = compute_mir(vision, text, outliers=mode)
    assert got.mir == pytest.approx(ref.mir, rel=1e-10)
    assert got.outliers_vision == ref.outliers_vision


def test_accumulate_starts_fresh_and_records_the_callers_settings_once():
    vision, text = _layers(4)
    acc = MIRAccumulator(3)
    acc.update(vision, text)
    with pytest.raises(RuntimeError, match="start from a new accumulator"):
        acc.accumulate(lambda a: a.update(vision, text))
    run = {"template": "chat", "n": 7, "sqrt": "exact", "outliers": "drop"}
    acc = MIRAccumulator(3)
    res = acc.accumulate(lambda a: a.update(vision, text), settings=run)
    assert res.settings == {**acc.record("exact"), **run}
    assert set(acc.record()) == {"sqrt", "outliers", "outlier_k", "scaling", "covariance",
                                 "tail_capacity", "median", "median_sample", "passes"}  # fmt: skip
    with pytest.raises(ValueError, match="disagree with the accumulator's on outliers, sqrt"):
        acc.compute("exact", settings={"sqrt": "scipy", "outliers": "median", "n": 7})
