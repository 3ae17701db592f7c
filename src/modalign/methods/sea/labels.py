"""SEA's word labels for image patches, from a CLIP-style model pair, cached on disk.

For every image: patch features in the joint space (CLIP: last-layer patch tokens -> post-LN ->
visual projection; SigLIP: its last hidden state), cosine with the text features of every word
of a word list (each word framed as the text tower was trained: CLIP pools its EOS, SigLIP the
last of 64 padded positions), the top-n words per patch ranked by `sign * cos` (SEA ranks by -cos, after CLIP
Surgery's observation on raw CLIP patch tokens; +1 ranks by plain similarity), and only the
positive scores kept. The cache is a folder: `manifest.json` (what built it: model and word-list
fingerprints, sign, n, the patch grid) and `part-XXXXX.safetensors` chunks written atomically, so
an interrupted build resumes and a stale cache (other model, words, sign or n) is refused.

    cache = build_label_cache(clip, tokenizer, image_processor, words, images, "cache/", top_n=10)
    idx, scores = cache.labels("coco/0001.jpg")     # (P, n) int32 word indices, float32 scores
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from modalign.atomic import atomic_write, atomic_write_json
from modalign.errors import ConfigError, ModelError
from modalign.methods.sea.label_cache import (
    FORMAT,
    MANIFEST,
    LabelCache,
    fingerprint,
    read_manifest,
    words_fingerprint,
)
from modalign.registry import Registry


@dataclass(frozen=True)
class PairFamily:
    """How one CLIP-style family is read: patch features in the joint space (B, P, E), and the
    text inputs its text tower was trained on (the tower pools one position, so the words must
    be framed as the captions were, or every word reads the same position)."""

    patches: Callable[[Any, torch.Tensor], torch.Tensor]
    text_inputs: Callable[[Any, Any, Sequence[str]], dict[str, torch.Tensor]]
    text_framing: str  # recorded in the cache manifest: a cache made otherwise is stale


FAMILIES: Registry[PairFamily] = Registry("CLIP-style family")


def _clip_patches(model: Any, pixel_values: torch.Tensor) -> torch.Tensor:
    hidden = model.vision_model(pixel_values=pixel_values).last_hidden_state[:, 1:]  # (B, P, Dv)
    return model.visual_projection(model.vision_model.post_layernorm(hidden))  # (B, P, E)


def _clip_text(model: Any, tokenizer: Any, words: Sequence[str]) -> dict[str, torch.Tensor]:
    """Each word as `tokenizer` frames it, ending in the EOS token the tower pools at (CLIP's
    own tokenizer adds it; one that does not gets it appended), right-padded."""
    eos = model.config.text_config.eos_token_id
    rows = [list(ids) for ids in tokenizer(list(words), add_special_tokens=True)["input_ids"]]
    if eos != 2:  # transformers' legacy CLIP configs pool at the largest id instead
        rows = [ids if ids and ids[-1] == eos else [*ids, eos] for ids in rows]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])  # (W, T)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])  # (W, T)
    return {"input_ids": ids, "attention_mask": mask}


def _siglip_patches(model: Any, pixel_values: torch.Tensor) -> torch.Tensor:
    return model.vision_model(pixel_values=pixel_values).last_hidden_state  # (B, P, E), post-LN


def _siglip_text(model: Any, tokenizer: Any, words: Sequence[str]) -> dict[str, torch.Tensor]:
    """SigLIP pools the last position and was trained on text padded to its full length."""
    length = model.config.text_config.max_position_embeddings
    enc = tokenizer(list(words), padding="max_length", max_length=length, truncation=True,
                    return_tensors="pt")  # fmt: skip
    return {"input_ids": enc["input_ids"]}


FAMILIES.register("clip")(PairFamily(_clip_patches, _clip_text, "tokens+eos, right-padded"))
FAMILIES.register("siglip")(
    PairFamily(_siglip_patches, _siglip_text, "padded to max_position_embeddings")
)


def _family(model: Any) -> PairFamily:
    kind = model.config.model_type
    if kind not in FAMILIES:
        raise ModelError(
            f"SEA labels need a CLIP-style model pair; got {kind!r} "
            f"(supported: {', '.join(FAMILIES.names())})"
        )
    return FAMILIES[kind]


@torch.no_grad()
def word_features(
    model: Any, tokenizer: Any, words: Sequence[str], batch_size: int = 256
) -> torch.Tensor:
    """Unit-norm text features (W, E) of the raw words (SEA's default: no prompt), framed as the
    family's text tower expects. Refuses a tower that gives distinct words the same feature
    (e.g. it pools a position that holds the same token in every row)."""
    family = _family(model)
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(words), batch_size):
        enc = family.text_inputs(model, tokenizer, words[start : start + batch_size])
        feats = model.get_text_features(**{k: v.to(device) for k, v in enc.items()})
        feats = getattr(feats, "pooler_output", feats)
        out.append(torch.nn.functional.normalize(feats.float(), dim=-1))
    feats = torch.cat(out)  # (W, E)
    distinct = {w: i for i, w in enumerate(words)}
    if len(distinct) > 1:
        sub = feats[list(distinct.values())]  # (U, E)
        cos = sub @ sub.T - 2 * torch.eye(len(sub), device=sub.device)  # (U, U), diagonal out
        if bool((cos > 1 - 1e-6).any()):
            raise ModelError(
                "SEA labels: the text tower gives different words the same feature; it pools a "
                "position that does not see the word (check that the tokenizer frames words as "
                "the tower was trained: BOS ... EOS for CLIP)"
            )
    return feats


def _top_words(
    features: torch.Tensor, words: torch.Tensor, top_n: int, sign: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, scores), each (B, P, n): per feature row (B, P, E), the top-n words (W, E) by
    sign * cos; scores <= 0 are dropped (index -1, score 0)."""
    feats = torch.nn.functional.normalize(features.float(), dim=-1)  # (B, P, E)
    sims = sign * (feats @ words.T)  # (B, P, W)
    scores, idx = sims.topk(min(top_n, words.shape[0]), dim=-1)  # (B, P, n)
    keep = scores > 0
    return torch.where(keep, idx, -1).to(torch.int32), torch.where(keep, scores, 0.0)


@torch.no_grad()
def patch_labels(
    model: Any, pixel_values: torch.Tensor, words: torch.Tensor, top_n: int, sign: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """SEA's labels, (indices, scores) each (B, P, n): the top-n words per patch token."""
    return _top_words(_family(model).patches(model, pixel_values), words, top_n, sign)


def _check_regions(grid: int, regions: int) -> None:
    if regions < 1 or grid % regions:
        raise ConfigError(f"SEA labels: regions must divide the {grid} x {grid} patch grid, "
                          f"got {regions}")  # fmt: skip


@torch.no_grad()
def region_labels(
    model: Any, pixel_values: torch.Tensor, words: torch.Tensor, top_n: int, sign: float,
    regions: int,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Labels from region crops, (indices, scores) each (B, P, n): the model's input view is cut
    into regions x regions cells, each cell resized to the full input and embedded whole (the
    image embedding CLIP was trained on, where its patch tokens were not), and a cell's top-n
    words go to every patch inside it. The crops are cut from `pixel_values`, so they cover
    exactly the patches of the grid whatever resizing or cropping the processor did."""
    vision = model.config.vision_config
    grid, size = vision.image_size // vision.patch_size, pixel_values.shape[-1]
    _check_regions(grid, regions)
    b, c, cell = pixel_values.shape[0], pixel_values.shape[1], size // regions
    crops = pixel_values.reshape(b, c, regions, cell, regions, cell)  # (B, C, G, s, G, s)
    crops = crops.permute(0, 2, 4, 1, 3, 5).reshape(-1, c, cell, cell)  # (B*G*G, C, s, s)
    crops = torch.nn.functional.interpolate(crops, size=(size, size), mode="bilinear",
                                            align_corners=False)  # fmt: skip  # (B*G*G, C, S, S)
    feats = model.get_image_features(pixel_values=crops)
    feats = getattr(feats, "pooler_output", feats).reshape(b, regions * regions, -1)  # (B, G*G, E)
    idx, scores = _top_words(feats, words, top_n, sign)  # (B, G*G, n)
    rows = torch.arange(grid) * regions // grid  # patch row/col -> region row/col
    cell_of = (rows[:, None] * regions + rows[None, :]).flatten()  # (P,) region of each patch
    return idx[:, cell_of], scores[:, cell_of]  # (B, P, n)


def build_label_cache(
    model: Any,
    tokenizer: Any,
    image_processor: Any,
    words: Sequence[str],
    images: Sequence[tuple[str, Callable[[], Any]]],
    out: str | os.PathLike[str],
    *,
    image_root: str | os.PathLike[str] = "",
    top_n: int = 10,
    sign: float | None = None,
    regions: int = 0,
    batch_size: int = 64,
    chunk_size: int = 1024,
    progress: bool = True,
) -> LabelCache:
    """Label every (image id, loader) with its patches' top-n words; resumable (see module doc).

    `model` is a CLIPModel / SiglipModel (vision + text towers, any device) with its own
    `tokenizer` and `image_processor`. `regions` 0: SEA's labels from the patch tokens;
    G > 0: from G x G region crops (`region_labels`). `sign` None: -1 for patch tokens (SEA),
    +1 for region crops (whole-image embeddings rank by plain similarity).
    """
    if sign is None:
        sign = -1.0 if regions == 0 else 1.0
    if top_n < 1 or sign not in (-1.0, 1.0):
        raise ConfigError(
            f"SEA labels: top_n >= 1 and sign in (-1, +1) needed, got {top_n}, {sign}"
        )
    family = _family(model)
    root = Path(out)
    words = list(words)
    vision = model.config.vision_config
    grid = vision.image_size // vision.patch_size
    if regions != 0:
        _check_regions(grid, regions)
    settings = _settings(fingerprint(model), words, top_n, sign, grid, image_root,
                         family.text_framing, regions)  # fmt: skip
    manifest = read_manifest(root)
    if manifest is not None:
        if {k: manifest.get(k) for k in settings} != settings:
            raise ConfigError(
                f"{os.fspath(root)!r} holds SEA labels built with other settings (model, words, "
                "sign, n, grid or regions); use a new folder"
            )
    else:
        manifest = {**settings, "words": words, "chunks": [], "complete": False}
    done = {i for c in manifest["chunks"] for i in c["images"]}
    todo = [(i, load) for i, load in images if i not in done]
    model.eval()
    text = word_features(model, tokenizer, words)
    device = next(model.parameters()).device
    from tqdm.auto import tqdm

    bar = tqdm(total=len(images), initial=len(images) - len(todo), desc="SEA labels",
               unit="image", disable=not progress)  # fmt: skip
    with bar:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start : start + chunk_size]
            idx, scores = [], []
            for b in range(0, len(chunk), batch_size):
                part = chunk[b : b + batch_size]
                pixels = image_processor([load() for _, load in part], return_tensors="pt")
                pixels = pixels["pixel_values"].to(device)  # (B, C, S, S)
                i, s = (region_labels(model, pixels, text, top_n, sign, regions) if regions
                        else patch_labels(model, pixels, text, top_n, sign))  # fmt: skip
                idx.append(i.cpu())
                scores.append(s.cpu().to(torch.float16))
                bar.update(len(part))
            name = f"part-{len(manifest['chunks']):05d}.safetensors"
            _save_chunk(root / name, torch.cat(idx), torch.cat(scores))
            manifest["chunks"].append({"file": name, "images": [i for i, _ in chunk]})
            atomic_write_json(root / MANIFEST, manifest)
    manifest["complete"] = True
    atomic_write_json(root / MANIFEST, manifest)
    return LabelCache.load(root)


def save_label_cache(
    out: str | os.PathLike[str],
    words: Sequence[str],
    grid: int,
    labels: Sequence[tuple[str, torch.Tensor, torch.Tensor]],
    *,
    source: str,
    image_root: str | os.PathLike[str] = "",
) -> LabelCache:
    """A label cache from labels made elsewhere (e.g. ground truth): per image id, (P, n) word
    indices (-1 = none) and scores; `source` stands where a built cache has its model's
    fingerprint. Same format as `build_label_cache`, written at once."""
    if not labels:
        raise ConfigError("SEA labels: no images to write")
    root, words = Path(out), list(words)
    shapes = {(tuple(i.shape), tuple(sc.shape)) for _, i, sc in labels}
    if len(shapes) != 1 or next(iter(shapes))[0] != next(iter(shapes))[1]:
        raise ConfigError(f"SEA labels: index and score shapes differ or vary ({shapes})")
    (p, n), _ = next(iter(shapes))
    if p != grid * grid or any(int(i.max()) >= len(words) or int(i.min()) < -1
                               for _, i, _ in labels):  # fmt: skip
        raise ConfigError(f"SEA labels: need {grid * grid} patches and word indices in "
                          f"[-1, {len(words)})")  # fmt: skip
    name = "part-00000.safetensors"
    _save_chunk(root / name, torch.stack([i.to(torch.int32) for _, i, _ in labels]),
                torch.stack([sc.to(torch.float16) for _, _, sc in labels]))  # fmt: skip
    manifest = {**_settings(source, words, n, 1.0, grid, image_root, None, None), "words": words,
                "chunks": [{"file": name, "images": [i for i, _, _ in labels]}], "complete": True}  # fmt: skip
    atomic_write_json(root / MANIFEST, manifest)
    return LabelCache.load(root)


def _settings(
    source: str, words: list[str], top_n: int, sign: float, grid: int,
    image_root: str | os.PathLike[str], text_framing: str | None, regions: int | None,
) -> dict[str, Any]:  # fmt: skip
    """What a cache was built from and how (a manifest's identity; a resumed build must match).
    `text_framing`: how words were fed to the text tower; `regions`: 0 patch tokens, G region
    crops (both None: labels not made by a tower)."""
    return {"format": FORMAT, "model": source, "words_sha256": words_fingerprint(words),
            "top_n": top_n, "sign": sign, "grid": grid, "image_root": os.fspath(image_root),
            "text_framing": text_framing, "regions": regions}  # fmt: skip


def _save_chunk(path: Path, indices: torch.Tensor, scores: torch.Tensor) -> None:
    from safetensors.torch import save

    data = save({"indices": indices.contiguous(), "scores": scores.contiguous()})
    atomic_write(path, lambda fh: fh.write(data))
