"""The one atomic writer: write to a temporary file in the target's folder, fsync, `os.replace`.

A reader (or a resumed run) sees either the old file or the complete new one, never a half-written
file, even if the process is killed mid-write or the machine loses power after the rename.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from modalign.errors import ConfigError

__all__ = [
    "atomic_dir",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "check_not_an_input",
    "check_writable",
]


def _fsync_dir(folder: Path) -> None:
    """Persist a rename in `folder` (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> Path:
    """Call `write(fh)` on a temp file next to `path`, fsync, rename it over `path`; returns path.
    The file gets the permissions a plain `open(path, "w")` would (0666 less the umask), not the
    temp file's 0600."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 text atomically."""
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write `data` as indented JSON (NaN/inf refused: they are not JSON) atomically."""
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


@contextmanager
def atomic_dir(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it is renamed to `path` (all or nothing).

    An existing non-empty `path` is refused unless `overwrite`, in which case it is replaced.
    """
    target = Path(path)
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise ConfigError(f"output folder {os.fspath(target)!r} exists and is not empty")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # as mkdir would make it, not mkdtemp's 0700
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_not_an_input(
    path: str | os.PathLike[str],
    flag: str,
    reads: Iterable[str | os.PathLike[str] | None],
    *,
    folder: bool = False,
) -> None:
    """Refuse an output that would overwrite what the run reads: `path` is one of `reads` (the
    same file, links resolved), lies inside a folder the run reads, or - for an output folder
    (`folder=True`) - holds one of them. Reads that do not exist locally (hub ids) are skipped."""
    target = Path(path).expanduser().resolve()
    for read in reads:
        if read is None or not Path(read).expanduser().exists():
            continue
        source = Path(read).expanduser().resolve()
        if _inside(target, source) or (folder and _inside(source, target)):
            raise ConfigError(
                f"{flag} {os.fspath(path)!r} would overwrite an input ({os.fspath(read)!r}); "
                "write the output elsewhere"
            )


def check_writable(
    path: str | os.PathLike[str],
    flag: str,
    reads: Iterable[str | os.PathLike[str] | None] = (),
    *,
    folder: bool = False,
) -> Path:
    """Fail early (before any work) if `path` cannot be written: a missing or read-only folder,
    a directory in its place, or an input of the run there (`reads`, see `check_not_an_input`;
    `folder`: `path` is an output folder). `flag` names the option in the message."""
    check_not_an_input(path, flag, reads, folder=folder)
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"{flag} {os.fspath(target)!r} is a directory, not a file")
    folder = target.parent if str(target.parent) else Path(".")
    probe = folder
    while not probe.exists():  # the writer creates missing folders: check the first that exists
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(
            f"{flag} {os.fspath(target)!r}: {os.fspath(probe)!r} is a file, not a folder"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{flag} {os.fspath(target)!r}: folder {os.fspath(probe)!r} is not writable"
        )
    if target.exists() and not os.access(target, os.W_OK):
        raise ConfigError(f"{flag} {os.fspath(target)!r} exists and is not writable")
    return target
