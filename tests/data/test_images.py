"""Image folders: recursion, order, lazy RGB loading, bad files, strict mode, empty folders."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from modalign.data import load_images, open_rgb, scan_images


def test_recursive_sorted_relative_ids(image_dir: Path) -> None:
    items = load_images(image_dir)
    ids = [item.image_id for item in items]
    assert ids == ["a.jpg", "b.png", "e.bmp", "f.webp", "sub/c.png", "sub/deeper/d.gif"]
    assert load_images(image_dir) == items  # deterministic


def test_loader_returns_rgb_copy(image_dir: Path) -> None:
    items = {item.image_id: item for item in load_images(image_dir)}
    gif = items["sub/deeper/d.gif"].load()
    assert isinstance(gif, Image.Image) and gif.mode == "RGB" and gif.size == (8, 6)
    png = items["b.png"].load()
    assert png.getpixel((0, 0)) == (0, 10, 200)


def test_corrupt_and_non_image_files_skipped_with_count(image_dir: Path) -> None:
    (image_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 3)
    (image_dir / "notes.txt").write_text("hello")
    (image_dir / ".DS_Store").write_bytes(b"\x00\x01")  # hidden: ignored silently
    with pytest.warns(UserWarning, match=r"skipped 2 of 8 files") as record:
        items = load_images(image_dir)
    message = str(record[0].message)
    assert "broken.jpg" in message and "notes.txt" in message
    assert len(items) == 6
    scan = scan_images(image_dir)
    assert [name for name, _ in scan.skipped] == ["broken.jpg", "notes.txt"]


def test_strict_names_the_bad_file(image_dir: Path) -> None:
    (image_dir / "zz_broken.jpg").write_bytes(b"garbage bytes")
    with pytest.raises(ValueError, match=r"zz_broken\.jpg"):
        load_images(image_dir, strict=True)


def test_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"contains no images.*no files found"):
        load_images(tmp_path)


def test_folder_of_only_bad_files(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"nope")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="none a readable image"):
        load_images(tmp_path)


def test_missing_and_non_directory(tmp_path: Path, make_image) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_images(tmp_path / "nope")
    file = make_image(tmp_path / "one.png", (1, 2, 3))
    with pytest.raises(ValueError, match="not a directory"):
        load_images(file)


def test_truncated_image_fails_at_decode_with_clear_error(tmp_path: Path, make_image) -> None:
    path = make_image(tmp_path / "big.png", (5, 5, 5), size=(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot read image .*big\.png"):
        open_rgb(path)


def test_symlink_cycle_is_walked_once(image_dir: Path) -> None:
    (image_dir / "sub" / "loop").symlink_to(image_dir, target_is_directory=True)
    ids = [item.image_id for item in load_images(image_dir)]
    assert ids == ["a.jpg", "b.png", "e.bmp", "f.webp", "sub/c.png", "sub/deeper/d.gif"]
