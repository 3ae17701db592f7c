"""Kill `modalign train` anywhere: at start-up, while a checkpoint is being written, between
steps. Re-running the same command resumes, and the run ends bit-identical to one that was never
interrupted (weights and the reported mean loss)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _command(tiny_llava: Path, tiny_data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "modalign", "train", "--model", str(tiny_llava), "--data",
            str(tiny_data / "llava" / "pretrain_level2.json"), "--image-folder", str(tiny_data),
            "--out", str(out), "--steps", "6", "--batch-size", "4", "--save-steps", "1",
            "--log-steps", "1", "--limit", "8", "--quiet", "--connector", "linear", "--moca",
            "--objective", "mfid:0.01", "--lr", "0.01"]  # fmt: skip


def _checkpoints(out: Path) -> list[Path]:
    return sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name[11:]))


def _kill_when(cmd: list[str], out: Path, ready, timeout: float = 240.0) -> bool:
    """Start `cmd`, SIGKILL it as soon as `ready(out)` holds; True if it was killed (False: it
    finished first)."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None:
            if ready(out):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            if time.monotonic() > deadline:
                raise AssertionError("the run neither reached the kill point nor finished")
            time.sleep(0.005)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_killed_anywhere_the_run_ends_bit_identical(tiny_llava, tiny_data, tmp_path):
    reference = tmp_path / "reference"
    subprocess.run(_command(tiny_llava, tiny_data, reference), env=ENV, check=True,
                   capture_output=True)  # fmt: skip
    out = tmp_path / "killed"
    cmd = _command(tiny_llava, tiny_data, out)
    kill_points = [
        ("start-up, before anything is written", lambda o: True),
        ("settings written, before the first step", lambda o: (o / "stage_settings.json").exists()),
        ("while checkpoint-2 is being written", lambda o: (o / "checkpoints" / "checkpoint-2").exists()),
        ("checkpoint-4 whole, the next step running",
         lambda o: (o / "checkpoints" / "checkpoint-4" / "trainer_state.json").exists()),
    ]  # fmt: skip
    killed = [name for name, ready in kill_points if _kill_when(cmd, out, ready)]
    assert len(killed) >= 3, killed  # the run must really have been cut (not finished first)
    assert not (out / "stage.json").exists()
    subprocess.run(cmd, env=ENV, check=True, capture_output=True)  # resumes to the end
    a = load_file(str(reference / "model" / "model.safetensors"))
    b = load_file(str(out / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    ref_summary = json.loads((reference / "stage.json").read_text())
    summary = json.loads((out / "stage.json").read_text())
    assert summary["train_loss"] == ref_summary["train_loss"]
    assert summary["settings"] == ref_summary["settings"]  # the same inputs, identity included
