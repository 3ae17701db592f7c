import json
import warnings

import pytest
import torch
from safetensors.torch import save_file

from modalign.cli import main
from modalign.metrics import compute_mir


def _write(path, k=3, n_v=80, n_t=40, d=8, drop=None, extra=None):
    g = torch.Generator().manual_seed(0)
    t = {}
    for i in range(k):
        t[f"vision.{i}"] = torch.randn(n_v, d, generator=g) * (1 + i) + 1
        t[f"text.{i}"] = torch.randn(n_t, d, generator=g)
    if drop:
        del t[drop]
    t.update(extra or {})
    save_file(t, str(path))
    return t


def test_mir_from_token_file_writes_schema_json(tmp_path, capsys):
    tensors = _write(tmp_path / "s.safetensors")
    out = tmp_path / "r.json"
    assert main(["mir", "--tokens", str(tmp_path / "s.safetensors"), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    ref = compute_mir(
        [tensors[f"vision.{i}"] for i in range(3)], [tensors[f"text.{i}"] for i in range(3)]
    )
    assert data["mir"] == pytest.approx(ref.mir, rel=1e-12)
    assert len(data["per_layer"]) == 3
    assert data["settings"]["sqrt"] == "exact" and data["settings"]["outliers"] == "drop"
    assert f"{ref.mir:.4f}" in capsys.readouterr().out


def test_flags_and_official_compat(tmp_path, capsys):
    tensors = _write(tmp_path / "s.safetensors")
    args = ["mir", "--tokens", str(tmp_path / "s.safetensors"), "--quiet"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([*args, "--compat", "official", "--json", str(tmp_path / "o.json")]) == 0
    data = json.loads((tmp_path / "o.json").read_text())
    assert data["settings"]["sqrt"] == "official" and data["settings"]["outliers"] == "median"
    assert main([*args, "--sqrt", "newton_schulz", "--outliers", "none"]) == 0
    value = float(capsys.readouterr().out.strip().splitlines()[-1])
    vision = [tensors[f"vision.{i}"] for i in range(3)]
    text = [tensors[f"text.{i}"] for i in range(3)]
    ref = compute_mir(vision, text, sqrt="newton_schulz", outliers="none")
    assert value == pytest.approx(ref.mir, abs=1e-6)
    assert ref.mir != pytest.approx(data["mir"], abs=1e-3)  # official numbers differ


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"drop": "text.1"}, "text layers"),
        ({"extra": {"weird": torch.ones(2)}}, "unexpected key 'weird'"),
        ({"extra": {"vision.0": torch.ones(4, 8, dtype=torch.int64)}}, "must be a float tensor"),
        ({"extra": {"text.2": torch.full((40, 8), float("nan"))}}, "layer 2, text"),
        ({"n_t": 1}, "at least 2"),
    ],
)
def test_bad_token_files_exit_2_without_output(tmp_path, capsys, kwargs, message):
    _write(tmp_path / "s.safetensors", **kwargs)
    out = tmp_path / "r.json"
    assert main(["mir", "--tokens", str(tmp_path / "s.safetensors"), "--json", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_unreadable_and_missing_files(tmp_path, capsys):
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    assert main(["mir", "--tokens", str(tmp_path / "junk.safetensors")]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err
    assert main(["mir", "--tokens", str(tmp_path / "missing.safetensors")]) == 2
    assert "not found" in capsys.readouterr().err
    save_file({"text.0": torch.ones(3, 2)}, str(tmp_path / "novision.safetensors"))
    assert main(["mir", "--tokens", str(tmp_path / "novision.safetensors")]) == 2
    assert "no vision" in capsys.readouterr().err


def test_baselines_flag_adds_table1_measures(tmp_path, capsys):
    _write(tmp_path / "s.safetensors")
    out = tmp_path / "r.json"
    args = ["mir", "--tokens", str(tmp_path / "s.safetensors"), "--baselines", "--json", str(out)]
    assert main(args) == 0
    b = json.loads(out.read_text())["metadata"]["baselines"]
    assert {"mmd", "mmd_layerwise", "kid", "kid_layerwise", "cosine_gap"} <= set(b)
    assert len(b["mmd_per_layer"]) == 3
    assert "KID" in capsys.readouterr().out


def test_json_output_validates_against_the_documented_schema(tmp_path):
    import jsonschema

    from modalign.metrics.result import result_schema

    _write(tmp_path / "s.safetensors")
    out = tmp_path / "r.json"
    assert main(["mir", "--tokens", str(tmp_path / "s.safetensors"), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    jsonschema.validate(data, result_schema())
    data["settings"]["sqrt"] = "magic"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, result_schema())


def test_median_flag_chooses_exact_or_estimate(tmp_path):
    g = torch.Generator().manual_seed(1)
    tensors = {}
    for i in range(2):
        v = torch.randn(6000, 4, generator=g)
        v[:40] *= 8  # real outliers: the median matters
        tensors[f"vision.{i}"], tensors[f"text.{i}"] = v, torch.randn(300, 4, generator=g)
    save_file(tensors, str(tmp_path / "s.safetensors"))
    out = {}
    for mode in ("exact", "estimate"):
        args = ["mir", "--tokens", str(tmp_path / "s.safetensors"), "--outliers", "median"]
        assert main([*args, "--median", mode, "--json", str(tmp_path / f"{mode}.json")]) == 0
        out[mode] = json.loads((tmp_path / f"{mode}.json").read_text())
    vision = [tensors[f"vision.{i}"] for i in range(2)]
    text = [tensors[f"text.{i}"] for i in range(2)]
    ref = compute_mir(vision, text, outliers="median", median="exact")
    assert out["exact"]["mir"] == pytest.approx(ref.mir, rel=1e-12)
    assert out["exact"]["settings"]["median"] == "exact"
    assert out["estimate"]["settings"]["median"] == "estimate"
    assert out["estimate"]["mir"] != out["exact"]["mir"]  # 6000 tokens > the 4096-token sample
