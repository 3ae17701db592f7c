"""Hard-negative captions, the CLIP batch with negatives, and the NegCLIP loss."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from modalign_lab.towers.clip_loss import negclip_loss
from modalign_lab.world.captions import LEVELS, captions
from modalign_lab.world.negatives import _edit, hard_negative_caption
from modalign_lab.world.scene import Scene, SceneObject, sample_scene


def _scenes(n: int) -> list[Scene]:
    rng = random.Random(5)
    return [sample_scene(rng, f"s{i}") for i in range(n)]


@pytest.mark.parametrize("level", range(LEVELS))
def test_negative_differs_from_truth_and_is_a_valid_caption(level):
    for scene in _scenes(60):
        neg = hard_negative_caption(scene, level, random.Random(f"{scene.scene_id}{level}"))
        assert neg != captions(scene)[level]
        assert neg.endswith(".") and neg.strip() == neg


def test_negative_is_deterministic_in_its_rng():
    scene = _scenes(1)[0]
    a = hard_negative_caption(scene, 3, random.Random("x"))
    assert a == hard_negative_caption(scene, 3, random.Random("x"))


def test_each_edit_changes_exactly_what_it_says():
    objs = (
        SceneObject("circle", "red", "small", 0),
        SceneObject("star", "blue", "large", 4),
    )
    scene = Scene("t", objs, "7", 8, 1)
    rng = random.Random(0)
    shape = _edit(scene, "shape", rng)
    changed = [(a, b) for a, b in zip(scene.objects, shape.objects, strict=True) if a != b]
    assert len(changed) == 1 and changed[0][0].shape != changed[0][1].shape
    assert changed[0][0].colour == changed[0][1].colour
    colour = _edit(scene, "colour", rng)
    assert {o.shape for o in colour.objects} == {"circle", "star"}
    assert [o.colour for o in colour.objects] != ["red", "blue"]
    swap = _edit(scene, "swap", rng)
    assert [(o.shape, o.cell) for o in swap.objects] == [("star", 0), ("circle", 4)]
    glyph = _edit(scene, "glyph", rng)
    assert glyph.glyph != "7" and glyph.objects == scene.objects
    assert _edit(Scene("u", objs[:1], None, None, 1), "glyph", rng) is None
    assert _edit(Scene("u", objs[:1], None, None, 1), "swap", rng) is None
    with pytest.raises(ValueError, match="unknown edit"):
        _edit(scene, "size", rng)


def _reference_loss(li: np.ndarray, lt: np.ndarray) -> float:
    """Float64 InfoNCE written out: -log softmax of the diagonal, both directions."""
    b = li.shape[0]

    def ce(logits):
        m = logits.max(1, keepdims=True)
        lse = (m + np.log(np.exp(logits - m).sum(1, keepdims=True)))[:, 0]
        return float(np.mean(lse - logits[np.arange(b), np.arange(b)]))

    return 0.5 * (ce(li) + ce(lt[:b]))


def test_negclip_loss_matches_reference_and_reduces_to_clip():
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(5, 8, generator=g, dtype=torch.float64), dim=1)
    txt = torch.nn.functional.normalize(torch.randn(9, 8, generator=g, dtype=torch.float64), dim=1)
    li = 7.0 * img @ txt.T  # (5, 9): 5 positives then 4 negatives
    out = SimpleNamespace(logits_per_image=li, logits_per_text=li.T)
    labels = torch.arange(5)
    got = negclip_loss(out, labels).item()
    assert got == pytest.approx(_reference_loss(li.numpy(), li.T.numpy()), rel=1e-12)
    # A harder negative (closer to the image) raises the loss.
    harder = li.clone()
    harder[0, 5] = harder[0, 0]
    out2 = SimpleNamespace(logits_per_image=harder, logits_per_text=harder.T)
    assert negclip_loss(out2, labels).item() > got
    with pytest.raises(ValueError, match="expected logits"):
        negclip_loss(out, torch.arange(6))


def test_clip_batch_with_negatives(tiny_data):
    from modalign_lab.towers.collators import ClipCollator
    from modalign_lab.towers.llava import build_image_processor
    from modalign_lab.towers.train import load_tokenizer
    from modalign_lab.world.dataset import load_split
    from modalign_lab.world.samples import CaptionDataset

    tok = load_tokenizer(tiny_data)
    collate = ClipCollator(tok, build_image_processor(64), 128)
    records = load_split(tiny_data, "train")
    data = CaptionDataset(records, 2, negatives_seed=0)
    items = [data[i] for i in range(4)]
    batch = collate(items)
    assert batch["input_ids"].shape[0] == 8 and batch["pixel_values"].shape[0] == 4
    assert batch["labels"].tolist() == [0, 1, 2, 3] and "return_loss" not in batch
    decoded = tok.batch_decode(batch["input_ids"][4:], skip_special_tokens=True)
    for item, text in zip(items, decoded, strict=True):
        assert text.replace(" ", "") == item.negative.replace(" ", "")
    assert data[1].negative == CaptionDataset(records, 2, negatives_seed=0)[1].negative
    plain = collate([CaptionDataset(records, 2)[i] for i in range(4)])
    assert plain["return_loss"] is True and plain["input_ids"].shape[0] == 4
    # Without negatives the loss is exactly CLIPModel's own.
    from modalign_lab.towers.clip_model import build_clip

    from tests.conftest import TINY_CLIP

    clip = build_clip(tok, TINY_CLIP, 0).eval()
    with torch.no_grad():
        out = clip(**plain)
        assert negclip_loss(out, torch.arange(4)).item() == pytest.approx(out.loss.item(), rel=1e-6)
        batch_out = clip(**{k: v for k, v in batch.items() if k != "labels"})
    assert batch_out.logits_per_image.shape == (4, 8)
    with pytest.raises(ValueError, match="every item or for none"):
        collate([items[0], CaptionDataset(records, 2)[1]])
