"""Text passages: plain lines with blank lines skipped (ids kept), JSONL, and bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modalign.data import TextItem, load_texts


def test_plain_text_keeps_line_indices(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("first passage\n\n   \n  second one  \nthird\n", encoding="utf-8")
    assert load_texts(path) == [
        TextItem(0, "first passage"),
        TextItem(3, "second one"),
        TextItem(4, "third"),
    ]


def test_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_bytes("\ufeffé one\r\ntwo\r\n".encode())
    assert [t.text for t in load_texts(path)] == ["é one", "two"]


def test_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    lines = [json.dumps({"text": "a cat"}), "", json.dumps({"text": "a dog", "id": 7})]
    path.write_text("\n".join(lines) + "\n")
    assert load_texts(path) == [TextItem(0, "a cat"), TextItem(2, "a dog")]


def test_jsonl_custom_key_and_empty_record_warning(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"caption": "x"}\n{"caption": " "}\n')
    with pytest.warns(UserWarning, match="skipped 1 records"):
        assert load_texts(path, text_key="caption") == [TextItem(0, "x")]


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("{not json}\n", "line 1: invalid JSON"),  # lines counted from 1, as editors do
        ('{"txt": "a"}\n', "line 1: expected an object with a 'text' key"),
        ('{"text": 3}\n', "'text' must be a string"),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path: Path, content: str, pattern: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=pattern):
        load_texts(path)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file_is_a_clear_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match="contains no passages"):
        load_texts(path)


def test_missing_file_and_bad_encoding(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_texts(tmp_path / "missing.txt")
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"ok\ncaf\xe9\n")
    with pytest.raises(ValueError, match=r"not valid UTF-8 \(line 2\)"):
        load_texts(path)


def test_passages_split_at_line_feeds_only(tmp_path: Path) -> None:
    """A form feed or U+2028 inside a passage does not start a new one (str.splitlines would)."""
    path = tmp_path / "t.txt"
    path.write_text("one\x0cstill one\r\ntwo\u2028still two\n", encoding="utf-8")
    assert [t.text for t in load_texts(path)] == ["one\x0cstill one", "two\u2028still two"]
