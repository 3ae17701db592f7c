"""`modalign mir --model <tiny dir> --images DIR --texts FILE`: end to end, and its failures."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from modalign.cli import main
from modalign.testing.tiny_vlms import build_tiny
from tests.models.conftest import PASSAGES


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_data")
    images = root / "images"
    images.mkdir()
    for i in range(6):
        g = torch.Generator().manual_seed(i)
        arr = (torch.rand(12 + i, 20, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr, "RGB").save(images / f"im{i}.png")
    texts = root / "texts.txt"
    texts.write_text("\n".join(PASSAGES) + "\n")
    return images, texts


def _run(capsys, *argv):
    rc = main(["mir", *map(str, argv)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_end_to_end_json_and_plot(tiny_dir, data, tmp_path, capsys):
    images, texts = data
    out, png = tmp_path / "out.json", tmp_path / "gap.png"
    rc, stdout, stderr = _run(capsys, "--model", tiny_dir("llava"), "--images", images,
                              "--texts", texts, "--n", 5, "--batch-size", 2,
                              "--json", out, "--plot", png)  # fmt: skip
    assert rc == 0, stderr
    res = json.loads(out.read_text())
    from modalign.metrics import MIRResult

    assert MIRResult.load(out).mir == res["mir"]  # validates; readable by `modalign mir compare`
    assert res["layers"] == [1, 2] and len(res["per_layer"]) == 2
    assert res["metadata"]["model"] == str(tiny_dir("llava"))
    samples = res["metadata"]["samples"]
    assert len(samples) == 5 and all(set(s) == {"image", "text"} for s in samples)
    assert len({s["image"] for s in samples}) == 5
    settings = res["settings"]  # recorded once, here (not again in the metadata)
    assert settings["seed"] == 0 and settings["n"] == 5 and settings["dtype"] == "float32"
    assert "settings" not in res["metadata"] and "seed" not in res["metadata"]
    assert set(res["metadata"]["versions"]) >= {"modalign", "torch", "transformers"}
    assert res["settings"]["template"] == "chat" and res["settings"]["batch_size"] == 2
    assert png.stat().st_size > 0
    assert f"{res['mir']:.4f}"[:4] in stdout


def test_same_seed_same_result_other_seed_other_samples(tiny_dir, data, tmp_path, capsys):
    images, texts = data
    outs = []
    for seed, batch in ((3, 1), (3, 4), (4, 4)):
        out = tmp_path / f"s{seed}_{batch}.json"
        rc, _, err = _run(capsys, "--model", tiny_dir("qwen2_vl"), "--images", images,
                          "--texts", texts, "--n", 4, "--seed", seed, "--batch-size", batch,
                          "--template", "plain", "--json", out)  # fmt: skip
        assert rc == 0, err
        outs.append(json.loads(out.read_text()))
    assert outs[0]["metadata"]["samples"] == outs[1]["metadata"]["samples"]
    assert abs(outs[0]["mir"] - outs[1]["mir"]) < 1e-6
    assert outs[0]["metadata"]["samples"] != outs[2]["metadata"]["samples"]


def test_dry_run_prints_marked_sample_and_writes_nothing(tiny_dir, data, tmp_path, capsys):
    images, texts = data
    out = tmp_path / "never.json"
    rc, stdout, _ = _run(capsys, "--model", tiny_dir("gemma3"), "--images", images, "--texts",
                         texts, "--dry-run", "--json", out)  # fmt: skip
    assert rc == 0
    assert "[VISION x4: <image_soft_token>]" in stdout and "[TEXT " in stdout
    assert not out.exists()


def test_repeats_and_layers(tiny_dir, data, tmp_path, capsys):
    images, texts = data
    out = tmp_path / "rep.json"
    rc, stdout, err = _run(capsys, "--model", tiny_dir("llava"), "--images", images, "--texts",
                           texts, "--n", 3, "--repeats", 3, "--layers", "2", "--json", out)  # fmt: skip
    assert rc == 0, err
    res = json.loads(out.read_text())
    rep = res["metadata"]["repeats"]
    assert (
        rep["repeats"] == 3 and len(rep["samples"]) == 3 and rep["min"] <= rep["mean"] <= rep["max"]
    )
    assert res["layers"] == [2]
    assert "mean" in stdout


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("empty_images", "image"),
        ("corrupt_strict", "image 'broken.jpg'"),
        ("empty_texts", "text"),
        ("zero_tokens", "tokenizes to zero tokens"),
        ("cross_attention", "cross-attention"),
        ("bad_layers", "--layers"),
    ],
)
def test_bad_inputs_exit_2_and_write_nothing(setup, message, tiny_dir, data, tmp_path, capsys):
    images, texts = data
    model = tiny_dir("llava")
    extra: list[str] = []
    if setup == "empty_images":
        images = tmp_path / "none"
        images.mkdir()
    elif setup == "corrupt_strict":
        images = tmp_path / "imgs"
        images.mkdir()
        Image.new("RGB", (8, 8)).save(images / "ok.png")
        (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        extra = ["--strict", "--n", "2"]  # the corrupt file is found when it is drawn
    elif setup == "empty_texts":
        texts = tmp_path / "empty.txt"
        texts.write_text("")
    elif setup == "zero_tokens":
        texts = tmp_path / "ctrl.txt"
        texts.write_text("\x01\x02\n")
        extra = ["--n", "1"]
    elif setup == "cross_attention":
        model = build_tiny("mllama", tmp_path / "mllama")
    elif setup == "bad_layers":
        extra = ["--layers", "1-x"]
    out = tmp_path / "out.json"
    rc, _, stderr = _run(capsys, "--model", model, "--images", images, "--texts", texts,
                         "--json", out, *extra)  # fmt: skip
    assert rc == 2
    assert message in stderr.lower() or message in stderr
    assert not out.exists()


def test_pairs_file_and_hf_dataset_inputs(tiny_dir, data, tmp_path, capsys):
    datasets = pytest.importorskip("datasets")
    images, _ = data
    rows = [{"image": str(images / f"im{i}.png"), "text": PASSAGES[i]} for i in range(4)]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "p.json"
    rc, _, err = _run(capsys, "--model", tiny_dir("idefics3"), "--pairs", pairs, "--n", 4,
                      "--json", out)  # fmt: skip
    assert rc == 0, err
    res = json.loads(out.read_text())
    assert len(res["metadata"]["samples"]) == 4 and res["metadata"]["data"]["kind"] == "pairs"

    ds = datasets.Dataset.from_dict(
        {"image": [Image.open(r["image"]).convert("RGB") for r in rows], "text": PASSAGES[:4]},
        features=datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")}),
    )
    ds.save_to_disk(str(tmp_path / "ds"))
    out2 = tmp_path / "d.json"
    rc, _, err = _run(capsys, "--model", tiny_dir("idefics3"), "--dataset", tmp_path / "ds",
                      "--n", 4, "--json", out2)  # fmt: skip
    assert rc == 0, err
    res2 = json.loads(out2.read_text())
    assert res2["metadata"]["data"]["kind"] == "hf_dataset"
    assert res2["n_text"] == res["n_text"]  # same images and passages, same tokens


def _broken_copy(src, dst, *, nan_layer: bool = False, patch_size: int | None = None):
    """A saved copy of a tiny model with NaN weights in decoder layer 2 or a wrong processor."""
    from transformers import AutoModelForImageTextToText

    from modalign.models.loading import load_processor

    model = AutoModelForImageTextToText.from_pretrained(src)
    processor = load_processor(str(src))
    if nan_layer:
        with torch.no_grad():
            model.get_decoder().layers[1].mlp.down_proj.weight.fill_(float("nan"))
    if patch_size:
        processor.patch_size = patch_size
    model.save_pretrained(dst)
    processor.save_pretrained(dst)
    return dst


@pytest.mark.parametrize(
    ("kind", "message"),
    [("nan", "layer 2: NaN/inf activations"), ("mismatch", "image token count mismatch")],
)
def test_model_failures_exit_2_and_write_nothing(kind, message, tiny_dir, data, tmp_path, capsys):
    images, texts = data
    model = _broken_copy(tiny_dir("llava"), tmp_path / "broken", nan_layer=kind == "nan",
                         patch_size=8 if kind == "mismatch" else None)  # fmt: skip
    out, png = tmp_path / "out.json", tmp_path / "out.png"
    rc, _, stderr = _run(capsys, "--model", model, "--images", images, "--texts", texts,
                         "--n", 3, "--json", out, "--plot", png)  # fmt: skip
    assert rc == 2
    assert message in stderr
    assert not out.exists() and not png.exists()


def test_baselines_stream_beside_mir_in_a_model_run(tiny_dir, data, tmp_path, capsys):
    images, texts = data
    out = tmp_path / "b.json"
    rc, stdout, stderr = _run(capsys, "--model", tiny_dir("llava"), "--images", images,
                              "--texts", texts, "--n", 4, "--baselines", "--json", out)  # fmt: skip
    assert rc == 0, stderr
    assert "baselines: MMD" in stdout
    b = json.loads(out.read_text())["metadata"]["baselines"]
    assert (
        b["sampled_tokens"][0] > 0
        and len(b["mmd_per_layer"]) == 2
        and b["mmd"] == b["mmd_per_layer"][0]
    )


def test_settings_recorded_once_equal_the_resolved_settings(tiny_dir, data, tmp_path, capsys):
    """The result's settings are the accumulator's record plus the resolved MIRSettings record,
    nothing added elsewhere (device/dtype: where the model ran; n: the pairs scored)."""
    from modalign.measure.settings import MIRSettings
    from modalign.metrics import MIRAccumulator

    images, texts = data
    out = tmp_path / "once.json"
    rc, _, err = _run(capsys, "--model", tiny_dir("llava"), "--images", images, "--texts", texts,
                      "--n", 4, "--seed", 2, "--layers", "2", "--compat", "official",
                      "--sqrt", "exact", "--json", out, "--quiet")  # fmt: skip
    assert rc == 0, err
    got = json.loads(out.read_text())["settings"]
    resolved = MIRSettings(n=4, seed=2, layers="2", compat="official", sqrt="exact").resolve(
        device="cpu", dtype="float32"
    )
    acc = MIRAccumulator(1, outliers=resolved.outliers, median=resolved.median)
    assert got == {**acc.record(resolved.backend), **resolved.record()}


def test_config_file_names_the_model_data_and_settings(tiny_dir, data, tmp_path, capsys):
    images, texts = data
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"model": str(tiny_dir("llava")), "images": str(images),
                                  "texts": str(texts), "n": 5, "layers": "2",
                                  "template": "plain"}))  # fmt: skip
    out = tmp_path / "c.json"
    rc, _, err = _run(capsys, "--config", config, "--n", 3, "--json", out, "--quiet")
    assert rc == 0, err
    res = json.loads(out.read_text())
    assert res["metadata"]["model"] == str(tiny_dir("llava"))
    assert res["settings"]["n"] == 3 and len(res["metadata"]["samples"]) == 3  # the flag wins
    assert res["layers"] == [2] and res["settings"]["template"] == "plain"


def test_baselines_with_repeats_per_subset_and_their_spread(tiny_dir, data, tmp_path, capsys):
    images, texts = data
    out = tmp_path / "rb.json"
    rc, stdout, err = _run(capsys, "--model", tiny_dir("llava"), "--images", images, "--texts",
                           texts, "--n", 3, "--repeats", 2, "--baselines",
                           "--baseline-tokens", 64, "--json", out)  # fmt: skip
    assert rc == 0, err
    res = json.loads(out.read_text())
    spread = res["metadata"]["repeats"]["baselines"]
    assert len(spread["mmd"]["values"]) == 2
    assert spread["mmd"]["values"][0] == res["metadata"]["baselines"]["mmd"]  # first subset
    assert spread["kid"]["min"] <= spread["kid"]["mean"] <= spread["kid"]["max"]
    assert "baselines: MMD" in stdout and "baselines over 2 subsets" in stdout


def test_no_model_scores_the_demo_and_says_so(capsys):
    """`modalign mir` alone: the shipped demo model on its held-out eval set, said in the
    output; its MIR is the documented 0.9824."""
    rc, stdout, err = _run(capsys)
    assert rc == 0, err
    lines = stdout.splitlines()
    assert lines[0].startswith("no --model given: scoring the shipped demo model (modalign.assets")
    assert "on its held-out eval set" in lines[0]
    assert lines[1].startswith("MIR       0.9824")


def test_reference_fresh_scores_the_model_with_fresh_connectors(tiny_dir, data, tmp_path, capsys):
    """`--reference fresh`: MIR of the same model with its connector re-initialised from each
    seed, beside the model's own (which the reference does not change), with lower-is-better."""
    images, texts = data
    base = ["--model", tiny_dir("llava"), "--images", images, "--texts", texts, "--n", 5]
    rc, plain, _ = _run(capsys, *base, "--quiet")
    assert rc == 0
    out = tmp_path / "ref.json"
    rc, stdout, _ = _run(capsys, *base, "--reference", "fresh", "--reference-seeds", 2,
                         "--json", out)  # fmt: skip
    assert rc == 0 and "lower is better" in stdout and "fresh connector (2 seeds)" in stdout
    result = json.loads(out.read_text())
    ref = result["metadata"]["reference"]
    assert ref["seeds"] == [0, 1] and len(ref["mir"]) == 2 and ref["mir"][0] != ref["mir"][1]
    assert abs(result["mir"] - float(plain.strip())) < 1e-6  # the trained connector is back


def test_reset_connector_redraws_a_foreign_projector_from_its_seed():
    """A projector that is not a registered connector (HF LLaVA's MLP) is re-drawn with
    nn.Linear's default ranges from the seed: the same seed, the same weights."""
    from torch import nn

    from modalign.methods.connectors import reset_connector

    proj = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4))
    reset_connector(proj, 5)
    first = [p.detach().clone() for p in proj.parameters()]
    reset_connector(proj, 6)
    assert not torch.equal(first[0], proj[0].weight)
    reset_connector(proj, 5)
    assert all(torch.equal(a, b) for a, b in zip(first, proj.parameters(), strict=True))
    assert float(proj[0].weight.abs().max()) <= 1 / 8**0.5  # U(-1/sqrt(fan_in), 1/sqrt(fan_in))
