"""The top-level CLI: fast help without torch, argparse everywhere, the error contract."""

from __future__ import annotations

import subprocess
import sys

import pytest

from modalign.cli import COMMANDS, main


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from modalign.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'numpy', 'matplotlib') if m in sys.modules]\n"
        "print(','.join(heavy) or 'light')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "light"
    assert all(name in out.stdout for name in COMMANDS)


def test_help_and_usage_errors_return_codes(capsys) -> None:
    assert main(["--help"]) == 0
    assert main(["mir", "--help"]) == 0
    assert "compare" in capsys.readouterr().out
    assert main(["mir", "compare", "--help"]) == 0
    assert main(["no-such-command"]) == 2
    assert main(["mir", "--n", "many"]) == 2
    assert main([]) == 2


def test_unwritable_output_fails_before_any_work(tmp_path, capsys) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    tokens = tmp_path / "missing.safetensors"  # would fail later; the path check comes first
    assert main(["mir", "--tokens", str(tokens), "--json", str(blocker / "r.json")]) == 2
    assert "--json" in capsys.readouterr().err


def test_unexpected_errors_keep_their_traceback(monkeypatch) -> None:
    import modalign.cli.mir_cmd as mir_cmd

    def boom(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(mir_cmd, "run", boom)
    with pytest.raises(ZeroDivisionError):
        main(["mir", "--tokens", "x.safetensors"])


def test_os_errors_are_one_line(monkeypatch, capsys) -> None:
    import modalign.cli.mir_cmd as mir_cmd

    def denied(args):
        raise PermissionError(13, "Permission denied", "/root/secret")

    monkeypatch.setattr(mir_cmd, "run", denied)
    assert main(["mir", "--tokens", "x.safetensors"]) == 2
    assert capsys.readouterr().err.strip() == "modalign: error: permission denied: /root/secret"
