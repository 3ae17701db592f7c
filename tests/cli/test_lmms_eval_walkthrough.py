"""docs/lmms-eval.md runs as written: every `modalign` command of its bash blocks is run in order
(training cut to two steps of a tiny LLaVA, validate on 8 probe pairs, on the CPU), every
lmms-eval command is replaced by the results file lmms-eval would write for it (its
--model_args, --tasks and --output_path read from the command line), and what the page says is
written and printed is checked."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from modalign.cli import main
from tests.evidence.lmms_fixture import TASKS, sanitize_model_name, scores_for, write_results

DOC = Path(__file__).resolve().parents[2] / "docs" / "lmms-eval.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
TRAIN_BUDGET = ["--steps", "2", "--batch-size", "4", "--limit", "8", "--save-steps", "0",
                "--log-steps", "1", "--quiet"]  # fmt: skip
VALIDATE_BUDGET = ["--n", "8", "--bootstrap", "100", "--dtype", "float32", "--device", "cpu"]


def blocks(kind: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(DOC.read_text(encoding="utf-8")) if lang == kind]


def commands() -> list[list[str]]:
    """The page's bash commands, continuation lines joined, in order."""
    out = []
    for body in blocks("bash"):
        for line in body.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                out.append(shlex.split(line))
    return out


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def lmms_eval(argv: list[str], run: int) -> Path:
    """What `accelerate launch -m lmms_eval ...` writes: one results file under --output_path."""
    assert argv[:2] == ["accelerate", "launch"] and argv[argv.index("-m") + 1] == "lmms_eval"
    model_args = flag(argv, "--model_args")
    pretrained = dict(kv.split("=", 1) for kv in model_args.split(","))["pretrained"]
    assert (Path(pretrained) / "config.json").is_file(), f"{pretrained}: not trained above"
    tasks = flag(argv, "--tasks").split(",")
    assert set(tasks) <= set(TASKS), f"the fixture knows {sorted(TASKS)}"
    scores = {t: v for t, v in scores_for(run).items() if t in tasks}
    return write_results(flag(argv, "--output_path"), pretrained, scores,
                         stamp=f"20250314_1{run:01d}1500", model=flag(argv, "--model"),
                         model_args_extra=model_args.removeprefix(f"pretrained={pretrained}"))  # fmt: skip


@pytest.mark.slow
def test_the_walkthrough_runs_as_written(tiny_llava, tiny_data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("llava-base").symlink_to(tiny_llava)
    Path("images").symlink_to(tiny_data)
    Path("probe").symlink_to(tiny_data / "test" / "images")
    Path("blip_laion_cc_sbu_558k.json").write_bytes(
        (tiny_data / "llava" / "pretrain_level2.json").read_bytes()
    )
    Path("llava_v1_5_mix665k.json").write_bytes((tiny_data / "llava" / "sft.json").read_bytes())
    Path("captions.txt").write_text(
        "\n".join(f"a red circle and {k} blue squares" for k in range(8))
    )
    ran = {"train": 0, "lmms_eval": 0, "validate": 0}
    err = ""
    for argv in commands():
        if argv[0] == "accelerate":
            lmms_eval(argv, ran["lmms_eval"])
            ran["lmms_eval"] += 1
            continue
        assert argv[0] == "modalign", f"a command the test does not know: {argv}"
        budget = TRAIN_BUDGET if argv[1] == "train" else VALIDATE_BUDGET
        assert main([*argv[1:], *budget]) == 0, argv
        err += capsys.readouterr().err
        ran[argv[1]] += 1
    assert ran == {"train": 6, "lmms_eval": 3, "validate": 3}
    # lmms-eval's layout, as the page shows it
    [layout] = [b for b in blocks("text") if b.startswith("lmms_out/")]
    for line in layout.splitlines()[1:]:
        folder = line.strip().split("/")[0]
        assert len(list((Path("lmms_out") / folder).glob("*_results.json"))) == 1, folder
    assert folder == sanitize_model_name("runs/sft_mfid/model")
    # each fine-tuned model's score landed on the pre-trained checkpoint it was tuned from
    report = json.loads(Path("val/validate.json").read_text())
    pts = [
        str((tmp_path / "runs" / f"pt_{v}" / "model").resolve()) for v in ("base", "lr2x", "mfid")
    ]
    assert [r["model"] for r in report["checkpoints"]] == [p for _ in range(3) for p in pts]
    assert list(report["correlations"]) == ["mme", "pope", "textvqa_val"]
    mme = [r["score"] for r in report["checkpoints"] if r["group"] == "mme"]
    assert mme == pytest.approx([scores_for(k)["mme"]["mme_perception_score"] for k in range(3)])
    given = json.loads(Path("val_given/validate.json").read_text())
    assert given["correlations"].keys() == report["correlations"].keys()
    assert json.loads(Path("val_pope/validate.json").read_text())["scores"]["tasks"] == {
        "pope": {"metric": "pope_f1_score,none", "chosen_by": "--metric"}
    }
    # what the page says is written and printed
    for name in ("validate.json", "validate.md", "validate-mir.png", "validate-caption_loss.png"):
        assert (Path("val") / name).is_file(), name
    [warning] = [b.strip() for b in blocks("text") if b.startswith("warning:")]
    assert warning in err
