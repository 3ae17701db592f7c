"""Image folders: recursion, order, lazy RGB loading, bad files, strict mode, empty folders."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from modalign.data import load_images, open_rgb, sample_pairs, scan_images


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


def test_listing_opens_no_file_and_skips_non_images(image_dir: Path, monkeypatch) -> None:
    (image_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 3)
    (image_dir / "notes.txt").write_text("hello")
    (image_dir / ".DS_Store").write_bytes(b"\x00\x01")  # hidden: ignored silently
    opened: list[str] = []
    real_open = Image.open
    monkeypatch.setattr(
        Image, "open", lambda fp, *a, **k: opened.append(str(fp)) or real_open(fp, *a, **k)
    )
    with pytest.warns(UserWarning, match=r"skipped 1 of 8 files") as record:
        items = load_images(image_dir)
    assert opened == []  # listing a folder decodes nothing
    assert "notes.txt" in str(record[0].message)
    assert len(items) == 7  # broken.jpg is an image type: found bad only if sampled
    assert [name for name, _ in scan_images(image_dir).skipped] == ["notes.txt"]
    broken = next(item for item in items if item.image_id == "broken.jpg")
    assert broken.load.verify() is not None and items[0].load.verify() is None


def test_strict_names_the_bad_file(image_dir: Path) -> None:
    (image_dir / "zz_notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"zz_notes\.txt"):
        load_images(image_dir, strict=True)
    (image_dir / "zz_notes.txt").unlink()
    (image_dir / "zz_broken.jpg").write_bytes(b"garbage bytes")
    texts = [f"passage {i}" for i in range(7)]
    with pytest.raises(ValueError, match=r"zz_broken\.jpg.*strict"):
        sample_pairs(load_images(image_dir, strict=True), texts, n=7, strict=True, lazy=True)


def test_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"contains no images.*no files found"):
        load_images(tmp_path)


def test_folder_of_only_bad_files(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_bytes(b"nope")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="none an image type"):
        load_images(tmp_path)
    (tmp_path / "x.jpg").write_bytes(b"nope")
    items = load_images(tmp_path)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no sample could be loaded"):
        sample_pairs(items, ["a passage"], n=1, lazy=True)


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


def test_high_bit_depth_and_float_images_are_scaled_not_clipped(tmp_path):
    """A 16-bit PNG reads as its picture (values / 257), not as white; 32-bit integer images
    whose values fit in 16 bits likewise; float images as [0, 1]."""
    import numpy as np

    from modalign.data import open_rgb

    grey = np.array([[0, 65535], [32768, 257]], dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    got = np.asarray(open_rgb(tmp_path / "g16.png"))
    assert got.shape == (2, 2, 3) and (got[..., 0] == got[..., 2]).all()
    assert got[..., 0].tolist() == [[0, 255], [128, 1]]
    Image.fromarray(grey.astype(np.int32), mode="I").save(tmp_path / "i32.tif")
    assert np.asarray(open_rgb(tmp_path / "i32.tif"))[..., 0].tolist() == [[0, 255], [128, 1]]
    floats = np.array([[0.0, 0.5], [1.0, 3.0]], dtype=np.float32)
    Image.fromarray(floats, mode="F").save(tmp_path / "f.tif")
    assert np.asarray(open_rgb(tmp_path / "f.tif"))[..., 0].tolist() == [[0, 128], [255, 255]]


def test_exif_orientation_is_applied_and_alpha_dropped(tmp_path):
    import numpy as np

    from modalign.data import open_rgb

    wide = Image.new("RGB", (4, 2), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    wide.save(tmp_path / "rot.jpg", exif=exif)
    assert open_rgb(tmp_path / "rot.jpg").size == (2, 4)
    Image.new("RGBA", (2, 2), (200, 100, 50, 0)).save(tmp_path / "clear.png")
    assert np.asarray(open_rgb(tmp_path / "clear.png"))[0, 0].tolist() == [200, 100, 50]
