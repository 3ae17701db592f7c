"""Cognition targets: pixel answers vs a direct computation, round trips, inserted turns."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from modalign.data.conversations import Conversation, ConversationDataset
from modalign.errors import ConfigError, DataError
from modalign.methods.vlsa.cognition import (
    PIXEL_QUESTION,
    VQ_QUESTION,
    CognitionTargets,
    insert_turn,
    parse_pixel_answer,
    parse_vq_answer,
    pixel_answer,
    pixel_grid,
    vq_answer,
)


def _block_image(grid: int, block: int, seed: int = 0) -> tuple[Image.Image, np.ndarray]:
    """An image whose G x G block means are known integers (each block: mean +/- d pattern)."""
    rng = np.random.default_rng(seed)
    means = rng.integers(20, 236, size=(grid, grid, 3))
    arr = np.repeat(np.repeat(means, block, 0), block, 1).astype(np.int64)
    pattern = np.tile(np.array([[1, -1], [-1, 1]]), (grid * block // 2, grid * block // 2))
    arr = arr + (pattern * 7)[..., None]  # zero-mean within every even-sized block
    return Image.fromarray(arr.astype(np.uint8), "RGB"), means


def test_pixel_grid_is_the_block_average():
    image, means = _block_image(8, 6)
    assert np.array_equal(pixel_grid(image, 8), means)


@pytest.mark.parametrize(("x", "y"), [(0, 0), (4, 4), (1, 3), (4, 0)])
def test_pixel_answer_is_the_quarter_from_the_corner(x, y):
    image, means = _block_image(8, 4, seed=1)
    text = pixel_answer(pixel_grid(image, 8), x, y)
    expected = [
        tuple(int(v) for v in means[r, c]) for r in range(y, y + 4) for c in range(x, x + 4)
    ]
    assert parse_pixel_answer(text) == expected and len(expected) == 16
    with pytest.raises(ConfigError, match="outside"):
        pixel_answer(means, 5, 0)


def test_answers_round_trip_and_bad_text_is_refused():
    codes = [0, 17, 402, 63, 5]
    assert parse_vq_answer(vq_answer(codes)) == codes
    with pytest.raises(DataError):
        parse_vq_answer("1 2 x")
    with pytest.raises(DataError):
        parse_pixel_answer("(1, 2, 3) (4, 5)")
    with pytest.raises(DataError):
        vq_answer([])
    with pytest.raises(ConfigError, match="even"):
        pixel_grid(Image.new("RGB", (8, 8)), 7)


def _conv(i: int, turns: int, tmp_path) -> Conversation:
    path = tmp_path / f"im{i}.png"
    _block_image(8, 4, seed=i)[0].save(path)
    qa = tuple((f"question {i}.{t}", f"answer {i}.{t}") for t in range(turns))
    return Conversation(f"c{i}", path, qa)


def test_insert_turn_places_the_turn_and_keeps_the_others():
    conv = Conversation("c", None, (("q0", "a0"), ("q1", "a1")))
    for pos in range(3):
        out = insert_turn(conv, ("Q", "A"), pos).turns
        assert out[pos] == ("Q", "A") and [t for t in out if t != ("Q", "A")] == list(conv.turns)
    with pytest.raises(ConfigError):
        insert_turn(conv, ("Q", "A"), 3)


def test_dataset_inserts_with_the_given_probability_deterministically(tmp_path):
    convs = [_conv(i, 1 + i % 3, tmp_path) for i in range(6)]
    base = ConversationDataset(convs * 50)
    data = CognitionTargets(base, probability=0.3, kinds=("pixel", "vq"), grid=8,
                            vq_codes=lambda s: [1, 2, 3], seed=0)  # fmt: skip
    added, kinds = 0, set()
    for i in range(len(data)):
        sample = data[i]
        turns, original = sample.conversation.turns, base.conversations[i].turns
        if len(turns) == len(original):
            assert turns == original
            continue
        added += 1
        extra = [t for t in turns if t not in original]
        assert len(extra) == 1
        question, answer = extra[0]
        if question == VQ_QUESTION:
            kinds.add("vq")
            assert answer == "1 2 3"
        else:
            kinds.add("pixel")
            x, y = (int(v) for v in question.split("(")[1].split(")")[0].split(", "))
            assert question == PIXEL_QUESTION.format(g=8, x=x, y=y)
            assert answer == pixel_answer(pixel_grid(sample.image, 8), x, y)
    assert kinds == {"pixel", "vq"}
    assert 0.2 < added / len(data) < 0.4  # 300 draws at p = 0.3
    again = CognitionTargets(base, probability=0.3, vq_codes=lambda s: [1, 2, 3], seed=0)
    assert all(again[i].conversation == data[i].conversation for i in range(30))
    other = CognitionTargets(base, probability=0.3, vq_codes=lambda s: [1, 2, 3], seed=1)
    assert any(other[i].conversation != data[i].conversation for i in range(30))


def test_dataset_refuses_bad_settings_and_imageless_records(tmp_path):
    base = ConversationDataset([_conv(0, 1, tmp_path)])
    with pytest.raises(ConfigError, match="needs a VQ model"):
        CognitionTargets(base, probability=0.5, kinds=("vq",))
    with pytest.raises(ConfigError, match="kinds"):
        CognitionTargets(base, probability=0.5, kinds=("colour",))
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        CognitionTargets(base, probability=1.5, kinds=("pixel",))
    no_image = ConversationDataset([Conversation("text-only", None, (("q", "a"),))])
    with pytest.raises(DataError, match="no image"):
        CognitionTargets(no_image, probability=0.5, kinds=("pixel",))
