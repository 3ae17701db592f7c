"""HF datasets: a tiny dataset built and saved offline, loaded back via `load_from_disk`."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

datasets = pytest.importorskip("datasets")

from modalign.data import load_hf_dataset, sample_refs  # noqa: E402


def save_tiny(path: Path, as_dict: bool = True) -> Path:
    """Save a 5-row image/text dataset (one row with an empty caption list) to disk."""
    images = [Image.new("RGB", (6, 4), (50 * i, 0, 0)) for i in range(5)]
    captions = [["a red square", "alt"], ["another"], [], ["x"], ["last one"]]
    features = datasets.Features(
        {"image": datasets.Image(), "captions": datasets.Sequence(datasets.Value("string"))}
    )
    ds = datasets.Dataset.from_dict({"image": images, "captions": captions}, features=features)
    (datasets.DatasetDict({"test": ds}) if as_dict else ds).save_to_disk(str(path))
    return path


def test_saved_dataset_dict(tmp_path: Path) -> None:
    path = save_tiny(tmp_path / "ds")
    with pytest.warns(UserWarning, match="skipped 1 of 5 rows"):
        refs = load_hf_dataset(path, split="test", text_column="captions")
    assert [(r.image.image_id, r.text.text_id, r.text.text) for r in refs] == [
        ("test:0", 0, "a red square"),
        ("test:1", 1, "another"),
        ("test:3", 3, "x"),
        ("test:4", 4, "last one"),
    ]
    img = refs[1].load().image
    assert img.mode == "RGB" and img.size == (6, 4) and img.getpixel((0, 0)) == (50, 0, 0)
    assert len(sample_refs(refs, n=3, seed=0)) == 3


def test_saved_single_dataset_and_errors(tmp_path: Path) -> None:
    path = save_tiny(tmp_path / "single", as_dict=False)
    with pytest.warns(UserWarning):
        refs = load_hf_dataset(path, text_column="captions")
    assert refs[0].image.image_id == "0"
    with pytest.raises(ValueError, match=r"no column 'text' \(columns: image, captions\)"):
        load_hf_dataset(path)
    with pytest.raises(ValueError, match="strict"):
        load_hf_dataset(path, text_column="captions", strict=True)
    dict_path = save_tiny(tmp_path / "dict")
    with pytest.raises(ValueError, match=r"no split 'validation' \(splits: test\)"):
        load_hf_dataset(dict_path, split="validation", text_column="captions")


def test_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot load dataset"):
        load_hf_dataset(tmp_path)
