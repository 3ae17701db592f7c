"""`modalign train` end to end on the miniature world's LLaVA JSON, and its bad-input contract."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from modalign.cli import main


def _args(tiny_llava, tiny_data, out, *extra):
    return ["train", "--model", str(tiny_llava), "--data",
            str(tiny_data / "llava" / "pretrain_level2.json"), "--image-folder", str(tiny_data),
            "--out", str(out), "--steps", "2", "--batch-size", "4", "--log-steps", "1",
            "--save-steps", "0", "--quiet", "--limit", "8", *extra]  # fmt: skip


def test_pretrain_then_sft_then_mir(tiny_llava, tiny_data, tmp_path, capsys):
    probe = tmp_path / "probe.txt"
    probe.write_text("a red circle\na blue square on the left\ntwo green stars\nthe end\n")
    pt = tmp_path / "pt"
    extra = ["--connector", "linear", "--moca", "--objective", "mfid:0.01", "--plain-end", "eos",
             "--mir-every", "1", "--mir-images", str(tiny_data / "test" / "images"),
             "--mir-texts", str(probe), "--mir-n", "4"]  # fmt: skip
    assert main(_args(tiny_llava, tiny_data, pt, *extra)) == 0
    summary = json.loads((pt / "stage.json").read_text())
    assert summary["unlock"]["trainable"]["moca"] > 0 and summary["unlock"]["trainable"]["llm"] == 0
    history = json.loads((pt / "train_log.json").read_text())["history"]
    assert any("loss/mfid" in h for h in history) and [
        h["step"] for h in history if "mir" in h
    ] == [0, 1, 2]
    assert (pt / "mir_monitor" / "mir_curve.png").is_file()
    # Re-running a finished stage does not train again.
    assert main(_args(tiny_llava, tiny_data, pt, *extra)) == 0
    sft = tmp_path / "sft"
    sft_args = _args(tiny_llava, tiny_data, sft, "--stage", "sft")
    sft_args[sft_args.index("--model") + 1] = str(pt / "model")
    sft_args[sft_args.index("--data") + 1] = str(tiny_data / "llava" / "sft.json")
    assert main(sft_args) == 0
    trained = json.loads((sft / "stage.json").read_text())["unlock"]["trainable"]
    assert trained["llm"] > 0 and trained["moca"] > 0  # MoCa keeps training in SFT
    capsys.readouterr()
    rc = main(["mir", "--model", str(sft / "model"), "--images", str(tiny_data / "test" / "images"),
               "--texts", str(probe), "--n", "4", "--quiet"])  # fmt: skip
    assert rc == 0 and math.isfinite(float(capsys.readouterr().out.strip().splitlines()[-1]))


def _bad_json(tmp_path, tiny_data):
    records = json.loads((tiny_data / "llava" / "pretrain_level2.json").read_text())[:4]
    records[2]["image"] = "train/images/nope.png"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(records))
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--connector", "transformer9000"], "unknown connector 'transformer9000'"),
        (["--objective", "telepathy"], "unknown objective 'telepathy'"),
        (["--llm", "lora", "--lora-targets", "nonexistent_proj"], "nonexistent_proj"),
        (["--llm", "first:99"], "99"),
        (["--vision", "from:50"], "50"),
        (["--llm", "sideways"], "sideways"),
        ("bad_json", "image 'train/images/nope.png' not found"),
    ],
)
def test_bad_input_is_one_line_and_nothing_is_written(tiny_llava, tiny_data, tmp_path, capsys,
                                                       extra, message):  # fmt: skip
    out = tmp_path / "run"
    args = _args(tiny_llava, tiny_data, out)
    if extra == "bad_json":
        args[args.index("--data") + 1] = str(_bad_json(tmp_path, tiny_data))
        extra = []
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") <= 3
    assert not out.exists()  # nothing written: no stage_settings.json, no checkpoints/


@pytest.mark.parametrize("damage", ["empty_image", "logger"])
def test_data_and_logger_errors_come_before_the_model_loads(tiny_llava, tiny_data, tmp_path,
                                                            capsys, monkeypatch, damage):  # fmt: skip
    """A zero-byte training image or a missing logger: one line, before the (slow) model load,
    nothing written."""
    import modalign.models.loading as loading

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(loading, "load_model", no_load)
    out = tmp_path / "run"
    args = _args(tiny_llava, tiny_data, out)
    if damage == "empty_image":
        records = json.loads((tiny_data / "llava" / "pretrain_level2.json").read_text())[:4]
        (tmp_path / "empty.png").write_bytes(b"")
        records[1]["image"] = str(tmp_path / "empty.png")
        (tmp_path / "d.json").write_text(json.dumps(records))
        args[args.index("--data") + 1] = str(tmp_path / "d.json")
        message = "1 image(s) cannot be read"
    else:
        args += ["--report-to", "tensorboard"]
        message = "the tensorboard logger is not installed"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_a_family_without_a_connector_to_swap_is_refused(tiny_data, tmp_path, capsys):
    from modalign.testing.tiny_vlms import build_tiny

    qwen = build_tiny("qwen2_vl", tmp_path / "qwen")
    args = _args(qwen, tiny_data, tmp_path / "q", "--connector", "linear")
    assert main(args) == 2
    assert "cannot swap the connector of a 'qwen2_vl' model" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tiny_llava, tiny_data, tmp_path):
    """torchrun with 2 CPU (gloo) processes x batch 2 == 1 process x batch 4, step by step."""
    losses = {}
    for procs, batch in ((1, 4), (2, 2)):
        out = tmp_path / f"p{procs}"
        args = _args(tiny_llava, tiny_data, out, "--steps", "3", "--batch-size", str(batch),
                     "--lr", "1e-2", "--plain-end", "eos", "--connector", "mlp2x_gelu")  # fmt: skip
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
               "--master_port", str(29500 + procs), "-m", "modalign", *args]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, timeout=300)
        log = json.loads((out / "train_log.json").read_text())
        assert log["processes"] == procs and log["global_batch"] == 4
        losses[procs] = [h["loss"] for h in log["history"] if "loss" in h]
    assert len(losses[1]) == 3
    assert losses[2] == pytest.approx(losses[1], abs=1e-4)


def test_vlsa_parts_through_train_and_mir(tiny_llava, tiny_data, tmp_path, capsys):
    """SA-Perceiver + reconstruction in pre-training, cognition turns in SFT, then MIR."""
    pytest.importorskip("diffusers")
    from modalign.testing.tiny_diffusion import tiny_vq, write_tiny_diffusion

    diffusion = write_tiny_diffusion(tmp_path / "diffusion")
    tiny_vq().save_pretrained(tmp_path / "vq")
    pt = tmp_path / "pt"
    extra = ["--connector", "sa_perceiver:num_heads=2", "--plain-end", "eos", "--objective",
             f"reconstruction:1,diffusion={diffusion},rank=8,train_denoiser=true"]  # fmt: skip
    assert main(_args(tiny_llava, tiny_data, pt, *extra)) == 0
    history = json.loads((pt / "train_log.json").read_text())["history"]
    assert any("loss/reconstruction/rec" in h for h in history)
    config = json.loads((pt / "model" / "config.json").read_text())
    assert (
        config["connector"]["name"] == "sa_perceiver"
        and config["image_seq_length"] == config["vision_seq_length"] + 1
    )
    sft = tmp_path / "sft"
    sft_args = _args(tiny_llava, tiny_data, sft, "--stage", "sft", "--cognition", "pixel,vq",
                     "--cognition-p", "1", "--vq-model", str(tmp_path / "vq"))  # fmt: skip
    sft_args[sft_args.index("--model") + 1] = str(pt / "model")
    sft_args[sft_args.index("--data") + 1] = str(tiny_data / "llava" / "sft.json")
    assert main(sft_args) == 0
    settings = json.loads((sft / "stage.json").read_text())["settings"]["stage"]
    assert settings["cognition"]["kinds"] == ["pixel", "vq"]
    probe = tmp_path / "probe.txt"
    probe.write_text("a red circle\na blue square on the left\ntwo green stars\nthe end\n")
    capsys.readouterr()
    rc = main(["mir", "--model", str(sft / "model"), "--images", str(tiny_data / "test" / "images"),
               "--texts", str(probe), "--n", "4", "--quiet"])  # fmt: skip
    assert rc == 0 and math.isfinite(float(capsys.readouterr().out.strip().splitlines()[-1]))
    # Cognition turns need the chat template and a VQ model for 'vq'.
    assert main(_args(tiny_llava, tiny_data, tmp_path / "x", "--cognition", "pixel")) == 2
    assert "chat template" in capsys.readouterr().err
    bad = _args(tiny_llava, tiny_data, tmp_path / "y", "--stage", "sft", "--cognition", "vq")
    assert main(bad) == 2 and "--vq-model" in capsys.readouterr().err


def test_the_mir_monitor_works_on_a_model_without_a_chat_template(tiny_llava, tiny_data,
                                                                 tmp_path, capsys):  # fmt: skip
    """A base pre-training checkpoint often has no chat template: the monitor's default layout is
    then plain; asking it for chat is one line before anything is written."""
    import shutil

    base = tmp_path / "base"
    shutil.copytree(tiny_llava, base)
    for name in ("chat_template.jinja", "chat_template.json"):
        (base / name).unlink(missing_ok=True)
    for name in ("processor_config.json", "tokenizer_config.json"):
        path = base / name
        if path.is_file():
            config = json.loads(path.read_text())
            config.pop("chat_template", None)
            path.write_text(json.dumps(config))
    probe = tmp_path / "probe.txt"
    probe.write_text("a red circle\na blue square\ntwo green stars\nthe end\n")
    out = tmp_path / "pt"
    args = _args(base, tiny_data, out, "--mir-every", "1", "--mir-n", "4", "--mir-texts",
                 str(probe), "--mir-images", str(tiny_data / "test" / "images"))  # fmt: skip
    assert main([*args, "--mir-template", "chat"]) == 2
    assert "has no chat template" in capsys.readouterr().err and not out.exists()
    assert main(args) == 0
    history = json.loads((out / "train_log.json").read_text())["history"]
    assert [h["step"] for h in history if "mir" in h] == [0, 1, 2]
