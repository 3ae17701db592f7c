"""LLaVA conversation files: validation with clear errors, nested prefixes, decode on use."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from modalign.data.conversations import ConversationDataset, load_conversations
from modalign.errors import DataError


def _write(tmp_path, records, name="conv.json"):
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    else:
        path.write_text(json.dumps(records))
    return path


def _record(i, image="a.png", turns=(("<image>\nWhat is it?", "A red circle."),)):
    msgs = []
    for q, a in turns:
        msgs += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    return {"id": f"r{i}", "image": image, "conversations": msgs}


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8), (200, 0, 0)).save(tmp_path / "img" / "a.png")
    return tmp_path / "img"


@pytest.mark.parametrize("name", ["conv.json", "conv.jsonl"])
def test_reads_records_and_strips_the_image_marker(tmp_path, folder, name):
    turns = (("<image>\nWhat is it?", "A red circle."), ("And the colour?", "red"))
    path = _write(tmp_path, [_record(0, turns=turns), _record(1)], name)
    convs = load_conversations(path, folder)
    assert [c.id for c in convs] == ["r0", "r1"]
    assert convs[0].turns == (("What is it?", "A red circle."), ("And the colour?", "red"))
    assert convs[0].image == folder / "a.png" and convs[1].caption == "A red circle."
    assert [c.id for c in load_conversations(path, folder, limit=1)] == ["r0"]  # a prefix
    sample = ConversationDataset(convs)[0]
    assert sample.image.size == (8, 8) and sample.conversation is convs[0]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (_record(0, image="missing.png"), r"record 0 \(id r0\): image 'missing.png' not found"),
        ({"id": "x", "image": "a.png"}, "'conversations' must be a non-empty list"),
        (
            {"id": "x", "image": "a.png", "conversations": [{"from": "human", "value": "q"}]},
            "must come in human/gpt pairs",
        ),
        (_record(0, turns=(("q", "   "),)), "empty assistant reply"),
        (
            {
                "id": "x",
                "image": "a.png",
                "conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}],
            },
            "expected from='human'",
        ),
        (
            {
                "id": "x",
                "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
            },
            "no 'image'",
        ),
        ([1, 2], "expected an object"),
    ],
)
def test_bad_records_are_named(tmp_path, folder, record, message):
    path = _write(tmp_path, [record])
    with pytest.raises(DataError, match=message):
        load_conversations(path, folder)


def test_bad_files(tmp_path, folder):
    with pytest.raises(DataError, match="does not exist"):
        load_conversations(tmp_path / "nope.json", folder)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="invalid JSON"):
        load_conversations(bad, folder)
    bad.write_text(json.dumps({"id": 1}))
    with pytest.raises(DataError, match="expected a JSON list"):
        load_conversations(bad, folder)
    bad.write_text("[]")
    with pytest.raises(DataError, match="has no records"):
        load_conversations(bad, folder)


def test_text_only_records_allowed_when_images_are_not_required(tmp_path, folder):
    rec = {"id": "t", "conversations": [{"from": "human", "value": "hi"},
                                        {"from": "gpt", "value": "hello"}]}  # fmt: skip
    convs = load_conversations(_write(tmp_path, [rec]), folder, require_image=False)
    assert convs[0].image is None and ConversationDataset(convs)[0].image is None


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (_record(0, turns=(("<image>\nWhat?", "It is <image>"),)), "message 1: <image> in an assistant"),
        (_record(0, turns=(("<image><image>\nWhat?", "A."),)), "message 0: <image> must stand once"),
        (_record(0, turns=(("<image>What?", "A."), ("<image>And?", "B."))), "message 2: <image> must"),
        (_record(0, image=None, turns=(("<image>\nWhat?", "A."),)), "in a record without 'image'"),
        ({"id": "x", "image": "a.png", "conversations": [{"from": "human", "value": "q"},
                                                          {"from": "human", "value": "a"}]},
         "message 1: expected from='gpt'"),  # the second message is message 1
    ],
)  # fmt: skip
def test_image_markers_and_roles_are_checked(tmp_path, folder, record, message):
    if record.get("image") is None:
        record.pop("image")
    path = _write(tmp_path, [record])
    with pytest.raises(DataError, match=message):
        load_conversations(path, folder, require_image=False)


def test_a_record_without_a_marker_gets_its_image_first(tmp_path, folder):
    path = _write(tmp_path, [_record(0, turns=(("What is it?", "A red circle."),))])
    conv = load_conversations(path, folder)[0]
    assert conv.image is not None and conv.turns == (("What is it?", "A red circle."),)
