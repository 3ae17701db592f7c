"""The procedural world: determinism, caption levels, VQA balance, disjoint splits."""

from __future__ import annotations

import hashlib
import itertools
import random

import numpy as np
import pytest
from modalign_lab.world.captions import LEVELS, captions
from modalign_lab.world.dataset import load_corpus, load_split, read_manifest, write_dataset
from modalign_lab.world.render import render_scene
from modalign_lab.world.scene import Scene, sample_scene
from modalign_lab.world.splits import make_splits
from modalign_lab.world.vocab import COLOURS, GLYPH_COLOUR, GLYPHS, MAX_OBJECTS, POSITIONS, SHAPES
from modalign_lab.world.vqa import scene_vqa

from modalign.errors import DataError


def _scenes(n: int, seed: int = 0) -> list[Scene]:
    return [sample_scene(random.Random(f"t:{seed}:{i}"), f"s{i}") for i in range(n)]


def test_scene_and_render_are_deterministic():
    a = sample_scene(random.Random(7), "x")
    b = sample_scene(random.Random(7), "x")
    assert a == b
    assert render_scene(a).tobytes() == render_scene(b).tobytes()
    assert render_scene(a, 96).size == (96, 96)


def test_scene_contents_are_valid():
    for s in _scenes(200):
        assert 1 <= len(s.objects) <= MAX_OBJECTS
        cells = [o.cell for o in s.objects] + ([s.glyph_cell] if s.glyph else [])
        assert len(cells) == len(set(cells))  # one thing per grid cell
        assert all(o.shape in SHAPES and o.colour in COLOURS for o in s.objects)
        assert s.glyph is None or s.glyph in GLYPHS
        assert Scene.from_dict(s.to_dict()) == s


def test_render_draws_the_objects_colour():
    s = next(s for s in _scenes(50) if len(s.objects) == 1 and s.objects[0].size == "large")
    img = render_scene(s)
    o = s.objects[0]
    side = 64 / 3
    centre = img.getpixel((int((o.col + 0.5) * side), int((o.row + 0.5) * side)))
    nominal = COLOURS[o.colour]
    assert max(abs(c - n) for c, n in zip(centre, nominal, strict=True)) <= 40


def test_render_rejects_bad_size():
    with pytest.raises(ValueError, match="image size"):
        render_scene(_scenes(1)[0], 300)
    with pytest.raises(ValueError, match="glyph_scale"):
        render_scene(_scenes(1)[0], 96, glyph_scale=0)


def test_high_resolution_world_draws_the_glyph_small():
    """At 288 px with glyph_scale 3 the glyph has the pixel size it has at 96 px by default:
    legible in a 96 px tile, a third of that in the 96 px low-resolution view."""
    scene = next(s for s in _scenes(50) if s.glyph is not None)
    small = render_scene(scene, 96)
    big = render_scene(scene, 288, glyph_scale=3)
    assert big.size == (288, 288)

    def glyph_pixels(image):
        arr = np.asarray(image).reshape(-1, 3)
        return int((arr == np.array(GLYPH_COLOUR)).all(1).sum())

    assert glyph_pixels(big) == glyph_pixels(small) > 0  # same dots, same dot size
    assert glyph_pixels(render_scene(scene, 288)) > 4 * glyph_pixels(big)  # default: scale 9


def test_caption_levels_are_sentence_prefixes_and_grow():
    for s in _scenes(100):
        caps = captions(s)
        assert len(caps) == LEVELS
        for short, long in itertools.pairwise(caps):
            assert long.startswith(short) and len(long) > len(short)
        full = caps[-1]
        for o in s.objects:
            assert f"{o.size} {o.colour} {o.shape}" in full
        if s.glyph:
            assert s.glyph in full and POSITIONS[s.glyph_cell] in full


def test_vqa_answers_match_the_scene():
    yes = no = 0
    for s in _scenes(300):
        for qa in scene_vqa(s, seed=0):
            if qa.qtype == "colour":
                assert qa.answer in {o.colour for o in s.objects}
            elif qa.qtype == "shape":
                assert qa.answer in {o.shape for o in s.objects}
            elif qa.qtype == "position":
                assert qa.answer in {o.position for o in s.objects}
            elif qa.qtype == "glyph":
                assert qa.answer == s.glyph
            elif qa.qtype == "existence":
                shape = qa.question.split()[3]
                assert shape in SHAPES and qa.question == f"is there a {shape} in the image?"
                present = any(o.shape == shape for o in s.objects)
                assert qa.answer == ("yes" if present else "no")
                yes += qa.answer == "yes"
                no += qa.answer == "no"
    assert yes == no > 0  # POPE-style balance


def test_splits_never_share_images():
    splits = make_splits(5, {"train": 300, "val": 50, "test": 80})
    ids = {k: {s.scene_id for s in v} for k, v in splits.items()}
    keys = {k: {s.key() for s in v} for k, v in splits.items()}
    pixels = {
        k: {hashlib.sha1(render_scene(s).tobytes()).hexdigest() for s in v}
        for k, v in splits.items()
    }
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not ids[a] & ids[b]
        assert not keys[a] & keys[b]
        assert not pixels[a] & pixels[b]
    assert all(len(keys[k]) == len(splits[k]) for k in splits)  # no duplicates within a split


def test_splits_reject_unknown_names():
    with pytest.raises(ValueError, match="unknown split"):
        make_splits(0, {"dev": 3})


def test_dataset_roundtrip(tmp_path):
    write_dataset(tmp_path, seed=1, sizes={"train": 5, "test": 3}, image_size=72, corpus_scenes=10)
    assert read_manifest(tmp_path)["image_size"] == 72
    recs = load_split(tmp_path, "test")
    assert len(recs) == 3
    img = recs[0].load_image()
    assert img.mode == "RGB" and img.size == (72, 72)
    assert len(recs[0].captions) == LEVELS and recs[0].vqa
    assert len(load_corpus(tmp_path)) > 20
    with pytest.raises(DataError, match="no 'val' split"):
        load_split(tmp_path, "val")
    with pytest.raises(DataError, match="not a lab dataset"):
        load_split(tmp_path / "nope", "train")


def test_corpus_questions_follow_a_description_of_their_own_scene():
    from modalign_lab.world.captions import captions
    from modalign_lab.world.corpus import build_corpus, scene_document
    from modalign_lab.world.vqa import scene_vqa

    lines = build_corpus(0, 200)
    qa_lines = [line for line in lines if "?" in line]
    assert qa_lines, "the corpus should hold grounded Q/A documents"
    for line in qa_lines:
        # A document opens with a level-2+ description: every object's place is stated.
        assert line.split("?")[0].count(" is at the ") + line.count(" is in the center") >= 1
    scene = _scenes(1, seed=4)[0]
    doc = scene_document(scene, 0, random.Random(1))
    desc = next(c for c in captions(scene)[2:] if doc.startswith(c + " "))
    rest = doc[len(desc) + 1 :]
    asked = {f"{q.question} {q.answer}." for q in scene_vqa(scene, 0)}
    pieces = [p.strip() + "." for p in rest.split(".") if p.strip()]
    assert sorted(pieces) == sorted(asked)
