"""`modalign validate` end to end on tiny LLaVA checkpoints built offline."""

from __future__ import annotations

import json

import pytest

from modalign.cli import main
from modalign.testing.tiny_vlms import build_tiny
from tests.cli.probe import write_probe


@pytest.fixture(scope="module")
def probe_and_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("validate")
    images, texts = write_probe(root)
    models = [build_tiny("llava", root / f"ck{s}", seed=s) for s in range(3)]
    return root, images, texts, models


def _args(out, images, texts):
    return ["--out", str(out), "--images", str(images), "--texts", str(texts), "--n", "8",
            "--bootstrap", "50", "--dtype", "float32", "--device", "cpu"]  # fmt: skip


def test_validate_measures_caches_and_reports(probe_and_models, tmp_path, capsys):
    root, images, texts, models = probe_and_models
    lines = [{"model": str(m), "score": s} for m, s in zip(models, (0.4, 0.6, 0.5), strict=True)]
    lines.append({"model": str(root / "missing_checkpoint"), "score": 0.9})
    ck = tmp_path / "ck.jsonl"
    ck.write_text("\n".join(json.dumps(x) for x in lines))
    out = tmp_path / "out"
    assert main(["validate", "--checkpoints", str(ck), *_args(out, images, texts)]) == 0
    captured = capsys.readouterr()
    assert "missing_checkpoint: FAILED" in captured.err
    report = json.loads((out / "validate.json").read_text())
    rows = report["checkpoints"]
    assert [("measures" in r) for r in rows] == [True, True, True, False]
    assert "## all" in captured.out  # one scatter PNG per measure, the points labelled
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(f"validate-{m}.png" for m in rows[0]["measures"])
    assert all((out / p).stat().st_size > 0 for p in pngs)
    # the MIR is the one `modalign mir` computes on the same pairs
    mir_json = tmp_path / "mir.json"
    assert main(["mir", "--model", str(models[1]), "--images", str(images), "--texts", str(texts),
                 "--n", "8", "--dtype", "float32", "--device", "cpu", "--json", str(mir_json),
                 "--quiet"]) == 0  # fmt: skip
    assert rows[1]["measures"]["mir"] == pytest.approx(json.loads(mir_json.read_text())["mir"])
    assert {"caption_loss", "perplexity", "mmd", "kid_layerwise"} <= set(rows[1]["measures"])
    table = report["correlations"]["all"]
    assert table["mir"]["n"] == 3 and table["mir"]["spearman"] is not None
    # second run: every finished checkpoint from the cache; the failed one is tried again
    assert main(["validate", "--checkpoints", str(ck), *_args(out, images, texts)]) == 0
    err = capsys.readouterr().err
    assert err.count("(cached)") == 3 and "missing_checkpoint: FAILED" in err


def test_flags_and_bad_input(probe_and_models, tmp_path, capsys):
    _, images, texts, models = probe_and_models
    out = tmp_path / "out"
    flags = [
        x
        for m, s in zip(models, (1, 2, 3), strict=True)
        for x in ("--model", str(m), "--score", str(s))
    ]
    assert main(["validate", *flags, *_args(out, images, texts), "--no-baselines"]) == 0
    measures = json.loads((out / "validate.json").read_text())["checkpoints"][0]["measures"]
    assert "mmd" not in measures and "mir" in measures
    capsys.readouterr()
    assert main(["validate", *flags[:4], *_args(out, images, texts)]) == 2
    assert "a correlation needs at least 3" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"model": "a", "score": 1}\n{"model": "b"}\n{"model": "c", "score": 1}\n')
    assert main(["validate", "--checkpoints", str(bad), *_args(out, images, texts)]) == 2
    assert "bad.jsonl:2: missing field(s) score" in capsys.readouterr().err
    constant = [x for m in models for x in ("--model", str(m), "--score", "0.5")]
    assert main(["validate", *constant, *_args(tmp_path / "c", images, texts)]) == 2
    err = capsys.readouterr().err  # one line, said before anything is measured; nothing written
    assert "every checkpoint's score is 0.5" in err and err.count("\n") == 1
    assert not (tmp_path / "c").exists()


def test_config_file_and_flags_build_the_validate_settings(probe_and_models, tmp_path, capsys):
    """validate's flags come from ValidateSettings / ValidateRun / ProbeData; a --config file sets
    any of them and the flags given override it; the report records the resolved identity."""
    from modalign.evidence.validate import ValidateSettings

    _, images, texts, models = probe_and_models
    config = tmp_path / "validate.yaml"
    config.write_text(f"images: {images}\ntexts: {texts}\nn: 6\nbootstrap: 20\nlevel: 0.9\n"
                      "baselines: false\ncaption_loss: false\nlayers: '2'\ndtype: float32\n"
                      "device: cpu\nseed: 3\n")  # fmt: skip
    flags = [x for m, s in zip(models, (1, 2, 3), strict=True)
             for x in ("--model", str(m), "--score", str(s))]  # fmt: skip
    out = tmp_path / "out"
    assert main(["validate", *flags, "--out", str(out), "--config", str(config), "--n", "5"]) == 0
    report = json.loads((out / "validate.json").read_text())
    want = ValidateSettings(baselines=False, caption_loss=False, layers=(2,), dtype="float32",
                            seed=3).identity()  # fmt: skip
    assert report["settings"] == {**want, "n": 5}  # n: the flag over the file's 6
    assert report["bootstrap"] == {"resamples": 20, "level": 0.9, "seed": 3}
    assert set(report["checkpoints"][0]["measures"]) == {"mir"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--median", "estimate"], "--median estimate applies to --outliers median only"),
        (["--level", "1.5"], "--level in (0, 1)"),
        (["--n", "0"], "--n must be >= 1"),
        (["--sqrt", "magic"], "invalid choice: 'magic'"),
    ],
)
def test_bad_settings_are_refused_before_any_work(probe_and_models, tmp_path, capsys, extra,
                                                  message):  # fmt: skip
    _, images, texts, models = probe_and_models
    flags = [x for m in models for x in ("--model", str(m), "--score", "1")]
    out = tmp_path / "out"
    assert main(["validate", *flags, *_args(out, images, texts), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
