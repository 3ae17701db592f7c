"""SampleSource: the three input kinds -> seeded Pairs with recorded ids; bad combinations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modalign.data import SampleSource, sample_ids


def test_folder_source(image_dir: Path, tmp_path: Path) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(f"passage {i}" for i in range(10)))
    source = SampleSource.from_args(images=image_dir, texts=texts, strict=True)
    assert len(source) == 6 and source.description["kind"] == "folder"
    pairs = source.sample(n=4, seed=1)
    assert sample_ids(pairs) == sample_ids(source.sample(n=4, seed=1))
    recorded = sample_ids(pairs)
    assert all(set(r) == {"image", "text"} for r in recorded)
    assert all((image_dir / r["image"]).is_file() for r in recorded)
    assert all(p.text == f"passage {p.text_id}" for p in pairs)
    json.dumps(recorded)  # JSON-serialisable as-is


def test_pairs_source(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "a.png", (1, 1, 1))
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"image": "a.png", "text": "t"}) + "\n")
    source = SampleSource.from_args(pairs=path)
    assert sample_ids(source.sample(n=1)) == [{"image": "a.png", "text": 0}]


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"images": "x", "pairs": "y"}, {"pairs": "y", "hf_dataset": "z"}],
)
def test_exactly_one_input(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="give exactly one input"):
        SampleSource.from_args(**kwargs)


def test_images_without_texts(image_dir: Path) -> None:
    with pytest.raises(ValueError, match="--images and --texts must be given together"):
        SampleSource.from_args(images=image_dir)


def test_direct_construction_is_checked() -> None:
    with pytest.raises(ValueError, match="either images and texts"):
        SampleSource()


def test_lazy_sample_matches_eager(image_dir: Path, tmp_path: Path) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(f"passage {i}" for i in range(10)))
    source = SampleSource.from_folder(image_dir, texts)
    lazy, eager = source.sample(n=5, seed=3, lazy=True), source.sample(n=5, seed=3)
    assert sample_ids(lazy) == sample_ids(eager)
    assert [p.image.tobytes() for p in lazy] == [p.image.tobytes() for p in eager]


def test_repeated_lazy_draws_decode_each_image_once(tmp_path: Path) -> None:
    from PIL import Image

    from modalign.data import ImageItem, TextItem

    calls: list[str] = []

    def loader(name: str) -> Image.Image:
        calls.append(name)
        return Image.new("RGB", (2, 2))

    images = [ImageItem(f"{i}", lambda i=i: loader(f"{i}")) for i in range(8)]
    texts = [TextItem(i, f"t{i}") for i in range(8)]
    source = SampleSource(images=images, texts=texts)
    first = source.sample(n=4, seed=0, lazy=True)
    assert len(calls) == 4
    assert sample_ids(source.sample(n=4, seed=0, lazy=True)) == sample_ids(first)
    assert len(calls) == 4  # already verified: no decoding to select again
    source.sample(n=4, seed=1, lazy=True)
    assert len(calls) == 4 + len(
        {r["image"] for r in sample_ids(source.sample(4, 1, lazy=True))}
        - {r["image"] for r in sample_ids(first)}
    )


def test_each_sampled_image_is_decoded_once(tmp_path, monkeypatch) -> None:
    """Listing opens nothing, sampling checks only the drawn images (no decode), use decodes once."""
    import modalign.data.images as images_mod
    from tests.data.conftest import write_image

    for i in range(30):
        write_image(tmp_path / "imgs" / f"{i:02d}.png", (i, 2 * i, 3 * i))
    (tmp_path / "t.txt").write_text("\n".join(f"passage {i}" for i in range(30)))
    decoded: list[str] = []
    verified: list[str] = []
    real_open_rgb, real_verify = images_mod.open_rgb, images_mod.verify_image
    monkeypatch.setattr(
        images_mod, "open_rgb", lambda p: decoded.append(str(p)) or real_open_rgb(p)
    )
    monkeypatch.setattr(
        images_mod, "verify_image", lambda p: verified.append(str(p)) or real_verify(p)
    )
    source = SampleSource.from_args(images=tmp_path / "imgs", texts=tmp_path / "t.txt")
    assert decoded == [] and verified == []
    pairs = source.sample(5, seed=1, lazy=True)
    assert decoded == [] and len(verified) == 5
    assert [p.image.size for p in pairs] == [(8, 6)] * 5
    assert sorted(decoded) == sorted(verified)  # each drawn image decoded exactly once
