"""Reading the checkpoint list: JSONL and flags, with clear errors for bad entries."""

from __future__ import annotations

import pytest

from modalign.errors import DataError
from modalign.evidence.checkpoints import Checkpoint, checkpoints_from_lists, read_checkpoints


def _write(tmp_path, text):
    path = tmp_path / "ck.jsonl"
    path.write_text(text)
    return path


def test_reads_entries_groups_comments_and_relative_paths(tmp_path):
    (tmp_path / "ckA").mkdir()
    path = _write(tmp_path, '# a comment\n{"model": "ckA", "score": 1}\n\n'
                  '{"model": "org/b", "score": 0.5, "group": "mmb"}\n'
                  '{"model": "/abs/c", "score": 2, "group": 3}\n')  # fmt: skip
    got = read_checkpoints(path)
    assert got == [Checkpoint(str(tmp_path / "ckA"), 1.0, "all"), Checkpoint("org/b", 0.5, "mmb"),
                   Checkpoint("/abs/c", 2.0, "3")]  # fmt: skip


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"model": "a"}', r"ck.jsonl:2: missing field\(s\) score"),
        ('{"score": 1}', r"ck.jsonl:2: missing field\(s\) model"),
        ('{"model": "a", "score": "high"}', "'score' must be a number"),
        ('{"model": "a", "score": true}', "'score' must be a number"),
        ('{"model": "a", "score": NaN}', "finite"),
        ('{"model": "", "score": 1}', "non-empty"),
        ('{"model": "a", "score": 1', "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_bad_lines_name_their_line(tmp_path, line, message):
    path = _write(tmp_path, '{"model": "x", "score": 1}\n' + line + '\n{"model": "y", "score": 2}\n'
                  '{"model": "z", "score": 3}\n')  # fmt: skip
    with pytest.raises(DataError, match=message):
        read_checkpoints(path)


def test_fewer_than_three_and_duplicates_are_refused(tmp_path):
    with pytest.raises(DataError, match="2 checkpoint"):
        read_checkpoints(
            _write(tmp_path, '{"model": "a", "score": 1}\n{"model": "b", "score": 2}\n')
        )
    with pytest.raises(DataError, match="listed twice"):
        checkpoints_from_lists(["a", "b", "a"], [1, 2, 3])
    # the same model in two groups (two benchmarks) is fine
    assert len(checkpoints_from_lists(["a", "b", "a"], [1, 2, 3], ["x", "x", "y"])) == 3
    with pytest.raises(DataError, match="--score"):
        checkpoints_from_lists(["a", "b", "c"], [1, 2])
    with pytest.raises(DataError, match="cannot read"):
        read_checkpoints(tmp_path / "missing.jsonl")
