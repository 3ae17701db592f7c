"""Pairs files (JSONL, CSV): relative paths, key aliases, missing/corrupt images, strict mode."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from modalign.data import load_pairs, sample_refs


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_jsonl_relative_to_file_folder(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "data" / "imgs" / "a.png", (255, 0, 0))
    make_image(tmp_path / "data" / "imgs" / "b.png", (0, 255, 0))
    path = write_jsonl(
        tmp_path / "data" / "pairs.jsonl",
        [{"image": "imgs/a.png", "text": "red"}, {"image": "imgs/b.png", "text": " green "}],
    )
    refs = load_pairs(path)
    assert [(r.image.image_id, r.text.text_id, r.text.text) for r in refs] == [
        ("imgs/a.png", 0, "red"),
        ("imgs/b.png", 1, "green"),
    ]
    pair = refs[1].load()
    assert pair.image.getpixel((0, 0)) == (0, 255, 0) and pair.text == "green"


def test_csv_with_aliases(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "x.jpg", (9, 9, 9))
    make_image(tmp_path / "y.jpg", (9, 9, 9))
    path = tmp_path / "pairs.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file_name", "caption"])
        writer.writerow(["x.jpg", "a caption, with a comma"])
        writer.writerow(["y.jpg", 'quoted "words"'])
    refs = load_pairs(path)
    assert [r.text.text for r in refs] == ["a caption, with a comma", 'quoted "words"']
    assert [r.image.image_id for r in refs] == ["x.jpg", "y.jpg"]


def test_tsv(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "a b.png", (9, 9, 9))
    path = tmp_path / "pairs.tsv"
    path.write_text("image\ttext\na b.png\ta caption, with a comma\n")
    refs = load_pairs(path)
    assert [(r.image.image_id, r.text.text) for r in refs] == [
        ("a b.png", "a caption, with a comma")
    ]


def test_explicit_keys_and_missing_column(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "a.png", (1, 1, 1))
    path = write_jsonl(tmp_path / "p.jsonl", [{"img": "a.png", "desc": "hello"}])
    assert load_pairs(path, image_key="img", text_key="desc")[0].text.text == "hello"
    with pytest.raises(ValueError, match=r"no image column .*found 'img', 'desc'"):
        load_pairs(path)


def test_missing_and_corrupt_images_skipped_or_strict(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "ok.png", (1, 2, 3))
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8garbage")
    rows = [
        {"image": "ok.png", "text": "fine"},
        {"image": "missing.png", "text": "gone"},
        {"image": "corrupt.jpg", "text": "bad"},
        {"image": "ok.png", "text": "   "},
    ]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.warns(UserWarning, match="skipped 2 of 4 pairs") as record:
        refs = load_pairs(path)  # opens no image: a missing file and an empty text are skipped
    assert "missing.png" in str(record[0].message)
    assert [r.text.text_id for r in refs] == [0, 2]
    with pytest.raises(ValueError, match=r"row 1: .*missing\.png"):
        load_pairs(path, strict=True)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable images: image 'corrupt\.jpg'"):
        pairs = sample_refs(refs, n=2, seed=0, lazy=True)  # the corrupt one is found when drawn
    assert [p.text_id for p in pairs] == [0]


@pytest.mark.parametrize(
    ("name", "content", "pattern"),
    [
        ("p.txt", "x", "expected .jsonl"),
        ("p.csv", "", "no CSV header"),
        ("p.jsonl", "[1, 2]\n", "expected a JSON object"),
        ("p.jsonl", "{bad\n", "invalid JSON"),
        ("p.jsonl", '{"image": 3, "text": "t"}\n', "non-empty path string"),
    ],
)
def test_bad_files(tmp_path: Path, name: str, content: str, pattern: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=pattern):
        load_pairs(path)


def test_sample_refs_keeps_pairs_together(tmp_path: Path, make_image) -> None:
    rows = []
    for i in range(12):
        make_image(tmp_path / f"{i}.png", (i, i, i))
        rows.append({"image": f"{i}.png", "text": f"text {i}"})
    refs = load_pairs(write_jsonl(tmp_path / "p.jsonl", rows))
    pairs = sample_refs(refs, n=5, seed=2)
    assert len(pairs) == 5
    assert all(p.image_id == f"{p.text_id}.png" and p.text == f"text {p.text_id}" for p in pairs)
    assert [p.image_id for p in pairs] == [p.image_id for p in sample_refs(refs, n=5, seed=2)]
    assert [p.image_id for p in pairs] != [p.image_id for p in sample_refs(refs, n=5, seed=3)]
