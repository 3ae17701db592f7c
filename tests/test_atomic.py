"""The one atomic writer: all or nothing, no temp files left, early writability checks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from modalign.atomic import (
    atomic_dir,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    check_writable,
)
from modalign.errors import ConfigError


def test_atomic_write_is_all_or_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")

    def explode(fh) -> None:
        fh.write(b"partial data")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, explode)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    atomic_write_text(target, "new ✓")
    assert target.read_text(encoding="utf-8") == "new ✓"


def test_json_refuses_nan_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "a" / "r.json"
    atomic_write_json(target, {"x": 1})
    with pytest.raises(ValueError):
        atomic_write_json(target, {"x": float("nan")})
    assert json.loads(target.read_text()) == {"x": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["r.json"]


def test_atomic_dir_replaces_only_on_success(tmp_path: Path) -> None:
    out = tmp_path / "model"
    with atomic_dir(out) as tmp:
        (tmp / "w.bin").write_bytes(b"1")
    assert (out / "w.bin").read_bytes() == b"1"
    with pytest.raises(ConfigError, match="not empty"), atomic_dir(out):
        pass
    with pytest.raises(RuntimeError), atomic_dir(out, overwrite=True) as tmp:
        (tmp / "w.bin").write_bytes(b"2")
        raise RuntimeError("killed")
    assert (out / "w.bin").read_bytes() == b"1"
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "w.bin").write_bytes(b"2")
    assert (out / "w.bin").read_bytes() == b"2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_check_writable(tmp_path: Path) -> None:
    assert check_writable(tmp_path / "new" / "deeper" / "r.json", "--json")
    with pytest.raises(ConfigError, match=r"--json .* is a directory"):
        check_writable(tmp_path, "--json")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match=r"file\.txt' is a file, not a folder"):
        check_writable(a_file / "r.json", "--json")  # its folder is a file
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions
            pytest.skip("running as a user that can write anywhere")
        with pytest.raises(ConfigError, match=r"--plot .* not writable"):
            check_writable(locked / "p.png", "--plot")
    finally:
        locked.chmod(0o700)


def test_outputs_get_the_umask_permissions_not_the_temp_files(tmp_path: Path) -> None:
    """Files 0666 and folders 0777 less the umask, as `open` / `mkdir` would make them."""
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "r.txt", "x")
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "w.bin").write_bytes(b"1")
    finally:
        os.umask(old)
    assert (tmp_path / "r.txt").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o750
