"""SEA: labels from a CLIP pair (cached, resumable, refused when stale), window/weight/dedupe
sampling, the InfoNCE, gradients, and the bad inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from modalign_lab.towers.llava import build_image_processor, load_llava
from modalign_lab.towers.train import load_tokenizer
from modalign_lab.world.dataset import load_split
from transformers import CLIPModel

from modalign.errors import ConfigError, DataError, ModelError
from modalign.methods.objectives import ForwardContext
from modalign.methods.sea.label_cache import LabelCache, load_words
from modalign.methods.sea.labels import build_label_cache, patch_labels, word_features
from modalign.methods.sea.objective import (
    SEAObjective,
    sample_pairs,
    symmetric_infonce,
    windows,
    word_token_ids,
)

WORDS = ["red", "green", "blue", "circle", "square", "star", "triangle", "small", "large"]


@pytest.fixture(scope="module")
def clip(tiny_towers):
    return CLIPModel.from_pretrained(tiny_towers[0] / "model").eval()


def _images(tiny_data, n=10):
    records = load_split(tiny_data, "train", n)
    return [(r.image_path.relative_to(tiny_data).as_posix(), r.load_image) for r in records]


def _build(clip, tiny_data, out, words=WORDS, **kw):
    tok = load_tokenizer(tiny_data)
    return build_label_cache(clip, tok, build_image_processor(64), words, _images(tiny_data), out,
                             image_root=tiny_data, top_n=3, progress=False, **kw)  # fmt: skip


@pytest.fixture(scope="module")
def cache(clip, tiny_data, tmp_path_factory):
    return _build(clip, tiny_data, tmp_path_factory.mktemp("sea") / "cache", chunk_size=4)


def test_labels_are_the_top_words_by_signed_cosine(clip, tiny_data, cache):
    tok = load_tokenizer(tiny_data)
    image_id, load = _images(tiny_data)[0]
    idx, scores = cache.labels(image_id)
    assert idx.shape == scores.shape == (16, 3)  # 64 px / 16 px patches, top 3
    # Independent computation: CLIP patch tokens -> post-LN -> projection; words -> text features.
    with torch.no_grad():
        pixels = build_image_processor(64)([load()], return_tensors="pt")["pixel_values"]
        h = clip.vision_model(pixel_values=pixels).last_hidden_state[0, 1:]
        v = clip.visual_projection(clip.vision_model.post_layernorm(h)).double()
        # Each word as the tower was trained (lab ClipCollator: <s> word </s>), one at a time.
        rows = [[tok.bos_token_id, *tok(w, add_special_tokens=False)["input_ids"],
                 tok.eos_token_id] for w in WORDS]  # fmt: skip
        t = torch.cat([getattr(f, "pooler_output", f) for f in
                       (clip.get_text_features(input_ids=torch.tensor([r])) for r in rows)])  # fmt: skip
        t = t.double()
    cos = -(v / v.norm(dim=-1, keepdim=True)) @ (t / t.norm(dim=-1, keepdim=True)).T  # (16, W)
    ref_scores, ref_idx = cos.topk(3, dim=-1)
    valid = ref_scores > 0
    assert torch.equal(idx, torch.where(valid, ref_idx, -1).int())
    assert torch.allclose(scores, torch.where(valid, ref_scores, 0.0).float(), atol=2e-3)  # fp16
    assert (scores[idx < 0] == 0).all() and (scores[idx >= 0] > 0).all()


def test_rebuild_is_identical_resumes_and_stale_caches_are_refused(
    clip, tiny_data, cache, tmp_path
):
    again = _build(clip, tiny_data, tmp_path / "again", chunk_size=4)
    assert all(torch.equal(again.indices[k], cache.indices[k]) for k in cache.indices)
    # A build killed after its first chunk resumes where it stopped.
    images = _images(tiny_data)
    calls = []

    def dying(i, load):
        def f():
            calls.append(i)
            if len(calls) > 4:
                raise KeyboardInterrupt
            return load()

        return f

    tok = load_tokenizer(tiny_data)
    with pytest.raises(KeyboardInterrupt):
        build_label_cache(clip, tok, build_image_processor(64), WORDS,
                          [(i, dying(i, f)) for i, f in images], tmp_path / "cut",
                          image_root=tiny_data, top_n=3, chunk_size=4, progress=False)  # fmt: skip
    with pytest.raises(DataError, match="not a finished"):
        LabelCache.load(tmp_path / "cut")
    resumed = _build(clip, tiny_data, tmp_path / "cut", chunk_size=4)
    assert all(torch.equal(resumed.indices[k], cache.indices[k]) for k in cache.indices)
    with pytest.raises(ConfigError, match="other settings"):
        _build(clip, tiny_data, tmp_path / "cut", words=[*WORDS, "purple"], chunk_size=4)
    other = CLIPModel(clip.config)
    with pytest.raises(ConfigError, match="another model"):
        LabelCache.load(cache.root, model=other)
    with pytest.raises(ConfigError, match="another word list"):
        LabelCache.load(cache.root, words=WORDS[:-1])
    assert LabelCache.load(cache.root, model=clip, words=WORDS).grid == 4


def test_word_lists(tmp_path):
    good = tmp_path / "w.txt"
    good.write_text("red\n\nblue\nred\n  green  \n")
    assert load_words(good) == ["red", "blue", "green"]
    empty = tmp_path / "e.txt"
    empty.write_text("\n  \n")
    with pytest.raises(DataError, match="is empty"):
        load_words(empty)
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"red\n\xff\xfe\x00bad\n")
    with pytest.raises(DataError, match="not UTF-8"):
        load_words(binary)


def test_windows_tile_the_grid():
    assert windows(3, 2) == [[0, 1, 3, 4], [2, 5], [6, 7], [8]]
    assert sorted(p for w in windows(4, 2) for p in w) == list(range(16))


def test_sampling_respects_windows_and_skips_unlabelled_patches():
    g = torch.Generator().manual_seed(0)
    indices = torch.arange(2 * 9 * 2).view(2, 9, 2).int()  # every label distinct
    indices[0, [0, 1, 3]] = -1  # window 0 of image 0 keeps only patch 4
    indices[1, 8] = -1  # window 3 of image 1 has no labelled patch
    scores = torch.ones(2, 9, 2)
    for _ in range(50):
        img, patch, word = sample_pairs(indices, scores, 3, 2, g)
        per = {(int(b), w) for b, p in zip(img, patch, strict=True)
               for w, win in enumerate(windows(3, 2)) if int(p) in win}  # fmt: skip
        assert len(per) == len(img)  # at most one patch per window and image
        assert (0, 0) in per and all(int(patch[i]) == 4 for i in range(len(img)) if int(img[i]) == 0
                                     and int(patch[i]) in windows(3, 2)[0])  # fmt: skip
        assert (1, 3) not in per and len(img) == 7
        assert all(int(indices[b, p].eq(w).any()) for b, p, w in zip(img, patch, word, strict=True))


def test_label_draws_follow_the_scores_chi_square():
    from scipy.stats import chisquare

    g = torch.Generator().manual_seed(1)
    indices = torch.tensor([[[10, 11, 12, -1]]]).int()  # one patch, three labels
    scores = torch.tensor([[[0.5, 0.3, 0.2, 0.0]]])
    counts = np.zeros(3)
    n = 6000
    for _ in range(n):
        counts[int(sample_pairs(indices, scores, 1, 1, g)[2]) - 10] += 1
    assert chisquare(counts, n * np.array([0.5, 0.3, 0.2])).pvalue > 1e-3
    assert chisquare(counts, n * np.array([1 / 3] * 3)).pvalue < 1e-6  # the test can fail


def test_shared_labels_are_kept_once():
    g = torch.Generator().manual_seed(2)
    indices = torch.full((4, 4, 1), 7).int()  # every patch of every image: the same word
    img, _, word = sample_pairs(indices, torch.ones(4, 4, 1), 2, 1, g)
    assert word.tolist() == [7] and len(img) == 1
    kept = {int(sample_pairs(indices, torch.ones(4, 4, 1), 2, 1, g)[0]) for _ in range(200)}
    assert kept == {0, 1, 2, 3}  # which pair keeps it is random


def test_infonce_matches_float64_by_hand_and_clip_loss():
    from transformers.models.clip.modeling_clip import image_text_contrastive_loss as clip_loss

    g = torch.Generator().manual_seed(3)
    a, b = (
        torch.randn(5, 7, generator=g, dtype=torch.float64),
        torch.randn(5, 7, generator=g, dtype=torch.float64),
    )
    s = torch.tensor(2.5, dtype=torch.float64)
    an, bn = (a / a.norm(dim=1, keepdim=True)).numpy(), (b / b.norm(dim=1, keepdim=True)).numpy()
    logits = 2.5 * an @ bn.T

    def ce(m):
        return float(np.mean([np.log(np.exp(row).sum()) - row[i] for i, row in enumerate(m)]))

    assert float(symmetric_infonce(a, b, s)) == pytest.approx(
        0.5 * (ce(logits) + ce(logits.T)), rel=1e-12
    )
    assert float(symmetric_infonce(a, b, s)) == pytest.approx(
        float(clip_loss(s * torch.tensor(bn) @ torch.tensor(an).T)), rel=1e-12
    )


def test_objective_gradients_and_bad_inputs(tiny_llava, tiny_data, cache, tmp_path):
    model, proc = load_llava(tiny_llava)
    obj = SEAObjective(labels=str(cache.root))
    # The two-step tiny CLIP labels nearly every patch with one word: give the test distinct ones.
    g = torch.Generator().manual_seed(4)
    for key in obj.cache.indices:
        obj.cache.indices[key] = torch.randint(len(WORDS), (16, 3), generator=g).int()
        obj.cache.scores[key] = torch.rand(16, 3, generator=g) + 0.1
    obj.setup(model, proc)
    paths = [str(tiny_data / i) for i, _ in _images(tiny_data)[:6]]
    for p in model.parameters():
        p.requires_grad_(False)
    connector = model.model.multi_modal_projector
    for p in connector.parameters():
        p.requires_grad_(True)
    vision = torch.randn(6, 16, 16)  # the tiny tower's width
    tokens = connector(vision)  # (6, 16, D)
    ctx = ForwardContext(model, {}, None, tokens, torch.ones(6, 16, dtype=torch.bool),
                         {"image_paths": paths})  # fmt: skip
    loss = obj(ctx)["sea"]
    assert math.isfinite(loss.item())
    loss.backward()
    assert obj.logit_scale.grad is not None and obj.logit_scale.grad.item() != 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in connector.parameters())
    assert all(
        p.grad is None for n, p in model.named_parameters() if "multi_modal_projector" not in n
    )
    # A connector that does not keep the CLIP's patch grid.
    ctx.connector_output = tokens[:, :9]
    with pytest.raises(ModelError, match="4x4 patch grid"):
        obj(ctx)
    # A batch too small for negatives: one image whose patches all carry the same word.
    first = obj.cache.image_id(paths[0])
    obj.cache.indices[first] = torch.zeros(16, 3, dtype=torch.int32)
    one = ForwardContext(model, {}, None, tokens[:1, :].detach(), torch.ones(1, 16, dtype=torch.bool),
                         {"image_paths": paths[:1]})  # fmt: skip
    with pytest.raises(DataError, match="at least 2"):
        obj(one)
    with pytest.raises(DataError, match="' ' tokenizes to nothing"):
        word_token_ids(proc.tokenizer, ["red", " "])
    ids, _mask = word_token_ids(proc.tokenizer, ["red", "triangle"])
    assert ids[0, 0] == proc.tokenizer(" red", add_special_tokens=False)["input_ids"][0]
    with pytest.raises(ConfigError, match="needs labels"):
        SEAObjective()


def test_word_features_are_unit_norm(clip, tiny_data):
    f = word_features(clip, load_tokenizer(tiny_data), WORDS)
    assert f.shape[0] == len(WORDS) and torch.allclose(f.norm(dim=-1), torch.ones(len(WORDS)))
    # Distinct words, distinct features (the lab tokenizer adds no EOS; CLIP pools there).
    cos = f @ f.T
    assert (cos - 2 * torch.eye(len(WORDS)) < 0.999).all()
    idx, _ = patch_labels(clip, torch.zeros(1, 3, 64, 64), f, 2, 1.0)
    assert idx.shape == (1, 16, 2)


def test_word_features_frame_words_as_the_tower_was_trained(clip, tiny_data):
    tok = load_tokenizer(tiny_data)
    # Batched, padded to the longest word: the same features as each "<s> word </s>" alone.
    words = ["red", "triangle small", "star"]
    f = word_features(clip, tok, words)
    with torch.no_grad():
        for k, w in enumerate(words):
            ids = [
                tok.bos_token_id,
                *tok(w, add_special_tokens=False)["input_ids"],
                tok.eos_token_id,
            ]
            ref = clip.get_text_features(input_ids=torch.tensor([ids]))
            ref = torch.nn.functional.normalize(getattr(ref, "pooler_output", ref), dim=-1)
            torch.testing.assert_close(f[k], ref[0], atol=1e-5, rtol=1e-5)

    # A tokenizer that cannot tell the words apart: a clear error, not identical labels.
    class Blind:
        pad_token_id = tok.pad_token_id

        def __call__(self, words, add_special_tokens=True):
            return {"input_ids": [[tok.bos_token_id, tok.unk_token_id] for _ in words]}

    with pytest.raises(ModelError, match="same feature"):
        word_features(clip, Blind(), ["red", "blue"])


def test_siglip_words_are_padded_to_the_full_length_it_pools_from(tiny_data):
    from transformers import SiglipConfig, SiglipModel

    tok = load_tokenizer(tiny_data)
    config = SiglipConfig(
        text_config={"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 1, "num_attention_heads": 2,
                     "max_position_embeddings": 12, "pad_token_id": tok.pad_token_id},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 16},
    )  # fmt: skip
    torch.manual_seed(0)
    model = SiglipModel(config).eval()
    words = ["red", "triangle small"]
    f = word_features(model, tok, words)
    with torch.no_grad():
        for k, w in enumerate(words):
            ids = tok(w)["input_ids"]
            ids = ids + [tok.pad_token_id] * (12 - len(ids))  # SigLIP pools the last position
            ref = model.get_text_features(input_ids=torch.tensor([ids]))
            ref = torch.nn.functional.normalize(getattr(ref, "pooler_output", ref), dim=-1)
            torch.testing.assert_close(f[k], ref[0], atol=1e-5, rtol=1e-5)
    idx, _ = patch_labels(model, torch.zeros(1, 3, 32, 32), f, 1, 1.0)
    assert idx.shape == (1, 4, 1)


def test_region_labels_embed_each_cell_crop_whole(clip, tiny_data, tmp_path):
    from modalign.methods.sea.labels import region_labels

    tok = load_tokenizer(tiny_data)
    words = word_features(clip, tok, WORDS)
    images = [load() for _, load in _images(tiny_data, 3)]
    pixels = build_image_processor(64)(images, return_tensors="pt")[
        "pixel_values"
    ]  # (3, 3, 64, 64)
    idx, scores = region_labels(clip, pixels, words, 3, 1.0, regions=2)
    assert idx.shape == scores.shape == (3, 16, 3)
    with torch.no_grad():
        for r in range(2):
            for c in range(2):
                crop = pixels[:, :, 32 * r : 32 * (r + 1), 32 * c : 32 * (c + 1)]  # (3, 3, 32, 32)
                crop = torch.nn.functional.interpolate(crop, size=(64, 64), mode="bilinear")
                f = clip.get_image_features(pixel_values=crop)
                f = torch.nn.functional.normalize(getattr(f, "pooler_output", f), dim=-1)
                ref_scores, ref_idx = (f @ words.T).topk(3, dim=-1)  # (3, 3)
                ref_idx = torch.where(ref_scores > 0, ref_idx, -1).int()
                # patches (row, col) of the 4 x 4 grid inside region (r, c)
                for pr in range(2 * r, 2 * r + 2):
                    for pc in range(2 * c, 2 * c + 2):
                        assert torch.equal(idx[:, 4 * pr + pc], ref_idx)
                        torch.testing.assert_close(
                            scores[:, 4 * pr + pc], ref_scores.clamp(min=0), atol=1e-5, rtol=1e-5
                        )
    with pytest.raises(ConfigError, match="must divide"):
        region_labels(clip, pixels, words, 3, 1.0, regions=3)
    # Through the cache: +cos by default, the regions part of the cache's identity.
    cache = _build(clip, tiny_data, tmp_path / "regions", regions=2)
    manifest = json.loads((tmp_path / "regions" / "manifest.json").read_text())
    assert manifest["regions"] == 2 and manifest["sign"] == 1.0
    first_id = _images(tiny_data)[0][0]
    i0, _ = cache.labels(first_id)
    assert torch.equal(i0, idx[0])
    with pytest.raises(ConfigError, match="other settings"):
        _build(clip, tiny_data, tmp_path / "regions", sign=1.0)  # patch tokens now
    with pytest.raises(ConfigError, match="must divide"):
        _build(clip, tiny_data, tmp_path / "bad", regions=3)
