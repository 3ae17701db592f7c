"""`modalign export` (each form, the refusals in one line with nothing written, --config) and
`modalign train` writing the portable form that a process without modalign loads."""

from __future__ import annotations

import json

import pytest

from modalign.cli import main
from modalign.models.checkpoint import save_model
from modalign.models.export import AUTO_MAP, CUSTOM_CODE, LLAVA, MODELING_FILE
from modalign.testing.export_matrix import Case, make_model, measure, probe_images


@pytest.fixture(scope="module")
def tiny_llava_dir(tmp_path_factory):
    from modalign.testing.tiny_vlms import build_tiny

    return build_tiny("llava", tmp_path_factory.mktemp("tiny") / "llava")


@pytest.fixture(scope="module")
def folders(tiny_llava_dir, tmp_path_factory):
    """Checkpoints as modalign writes them: linear (plain llava), qformer + MoCa (custom code),
    and a qwen2_vl with MoCa (loadable with modalign only)."""
    from modalign.methods.moca import attach_moca
    from modalign.models.loading import load_model, load_processor
    from modalign.testing.tiny_vlms import build_tiny

    root = tmp_path_factory.mktemp("export_cli")
    llava = tiny_llava_dir
    out = {}
    for name, connector, moca in (("linear", "linear", False), ("qformer", "qformer", True)):
        model, processor = make_model(llava, connector, moca)
        out[name] = save_model(model, processor, root / name)
    qwen = build_tiny("qwen2_vl", root / "qwen")
    model = load_model(str(qwen), "cpu", "float32")
    attach_moca(model)
    out["qwen_moca"] = save_model(model, load_processor(str(qwen)), root / "qwen_moca")
    return out


def _config(folder):
    return json.loads((folder / "config.json").read_text())


@pytest.mark.parametrize(
    ("source", "form", "model_type"),
    [("linear", "auto", "llava"), ("linear", "custom-code", "modalign_llava"),
     ("qformer", "auto", "modalign_llava")],
)  # fmt: skip
def test_export_writes_the_form_asked_for(folders, tmp_path, capsys, source, form, model_type):
    out = tmp_path / "out"
    assert main(["export", str(folders[source]), "--out", str(out), "--format", form]) == 0
    printed = capsys.readouterr().out
    written = LLAVA if model_type == "llava" else CUSTOM_CODE
    assert f"wrote the {written} form" in printed
    assert ("trust_remote_code=True" in printed) == (written == CUSTOM_CODE)
    config = _config(out)
    assert config["model_type"] == model_type
    assert (config.get("auto_map") == AUTO_MAP) == (written == CUSTOM_CODE)
    assert (out / MODELING_FILE).exists() == (written == CUSTOM_CODE)


def test_export_round_trips_between_the_forms(folders, tmp_path, tiny_llava_dir):
    """linear: llava -> custom code -> llava; each step loads without modalign, equal to the
    model first saved, and modalign's loader gives that model back."""
    from modalign.testing.export_matrix import run_probe

    images = probe_images(tmp_path / "images")
    model, processor = make_model(tiny_llava_dir, "linear", False)
    reference = run_probe(model, processor, images)
    assert main(["export", str(folders["linear"]), "--out", str(tmp_path / "cc"),
                 "--format", "custom-code"]) == 0  # fmt: skip
    assert main(["export", str(tmp_path / "cc"), "--out", str(tmp_path / "back")]) == 0
    assert _config(tmp_path / "back")["model_type"] == "llava"
    cases = [Case("linear", False, CUSTOM_CODE, tmp_path / "cc", via="cli", reference=reference),
             Case("linear", False, LLAVA, tmp_path / "back", via="cli", reference=reference)]  # fmt: skip
    for cell in measure(cases, images, tmp_path / "work"):
        assert cell.loads and cell.logits_equal and cell.generations_equal, cell.error
        assert cell.same_as_saved


@pytest.mark.parametrize(
    ("source", "args", "message"),
    [
        ("qformer", ["--format", "llava"], "MoCa cannot be folded into Llama weights"),
        ("linear", ["--format", "llava", "--out", "{src}/inner"], "would overwrite an input"),
        ("qwen_moca", [], "no form of this model loads without modalign"),
        ("qwen_moca", ["--format", "custom-code"], "custom code is generated for LLaVA models"),
        ("linear", ["--out", "{nonempty}"], "exists and is not empty"),
        ("linear", ["--out", None], "missing setting(s) out"),
    ],
)
def test_refusals_are_one_line_and_write_nothing(folders, tmp_path, capsys, source, args,
                                                 message):  # fmt: skip
    nonempty = tmp_path / "full"
    nonempty.mkdir()
    (nonempty / "keep.txt").write_text("mine")
    out = tmp_path / "out"
    argv = ["export", str(folders[source])]
    if "--out" not in args:
        argv += ["--out", str(out)]
    for arg in args:
        if arg is not None:
            argv.append(arg.format(src=folders[source], nonempty=nonempty))
        elif argv[-1] == "--out":
            argv.pop()
    before = sorted(p.name for p in folders[source].iterdir())
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists() and sorted(p.name for p in folders[source].iterdir()) == before
    assert [p.name for p in nonempty.iterdir()] == ["keep.txt"]


def test_settings_from_a_config_file(folders, tmp_path, capsys):
    config = tmp_path / "export.json"
    config.write_text(json.dumps({"out": str(tmp_path / "out"), "format": "custom-code"}))
    assert main(["export", str(folders["linear"]), "--config", str(config)]) == 0
    assert _config(tmp_path / "out")["model_type"] == "modalign_llava"
    flags = ["export", str(folders["linear"]), "--config", str(config), "--out",
             str(tmp_path / "flag"), "--format", "llava"]  # fmt: skip
    assert main(flags) == 0 and _config(tmp_path / "flag")["model_type"] == "llava"
    config.write_text(json.dumps({"out": str(tmp_path / "x"), "format": "onnx"}))
    assert main(["export", str(folders["linear"]), "--config", str(config)]) == 2
    assert "onnx" in capsys.readouterr().err and not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- modalign train


def _train(tiny_llava, tiny_data, out, *extra):
    return ["train", "--model", str(tiny_llava), "--data",
            str(tiny_data / "llava" / "pretrain_level2.json"), "--image-folder", str(tiny_data),
            "--out", str(out), "--steps", "1", "--batch-size", "4", "--save-steps", "0",
            "--quiet", "--limit", "4", *extra]  # fmt: skip


def test_train_writes_the_portable_form(tiny_llava, tiny_data, tmp_path, capsys):
    """`modalign train` writes plain llava for LLaVA's projector and custom code for a Q-Former
    with MoCa; both load without modalign, equal to modalign's loader."""
    qformer = "qformer:num_queries=4,num_layers=1,hidden_size=16,num_heads=2,intermediate_size=32"
    runs = {LLAVA: ("--connector", "mlp2x_gelu"), CUSTOM_CODE: ("--connector", qformer, "--moca")}
    cases = []
    for form, extra in runs.items():
        out = tmp_path / form
        assert main(_train(tiny_llava, tiny_data, out, *extra)) == 0
        model_type = "llava" if form == LLAVA else "modalign_llava"
        assert _config(out / "model")["model_type"] == model_type
        cases.append(Case(extra[1].split(":")[0], "--moca" in extra, form, out / "model",
                          via="train"))  # fmt: skip
    capsys.readouterr()
    for cell in measure(cases, probe_images(tmp_path / "images"), tmp_path / "work"):
        assert cell.loads and cell.logits_equal and cell.generations_equal, cell.error
