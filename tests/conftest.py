"""Shared fixtures: the miniature world at test size (a generated dataset, two-step towers, a
saved tiny LLaVA), built once per session in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from modalign_lab.towers.specs import ClipSpec, LMSpec

TINY_SIZES = {"train": 24, "val": 8, "test": 8}
TINY_CLIP = ClipSpec(
    image_size=64,
    patch_size=16,
    vision_hidden=16,
    vision_layers=1,
    text_hidden=16,
    text_layers=1,
    heads=2,
    projection_dim=16,
)
TINY_LM = LMSpec(hidden=32, layers=1, heads=2, intermediate=64, max_positions=256)


@pytest.fixture(scope="session", autouse=True)
def _threads():
    """One thread: deterministic and polite on a shared CPU."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="session")
def tiny_specs() -> tuple[dict[str, int], ClipSpec, LMSpec]:
    """Split sizes and model specs small enough for tests."""
    return TINY_SIZES, TINY_CLIP, TINY_LM


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A generated dataset with a handful of images per split and its tokenizer."""
    from modalign_lab.towers.train import make_data

    out = tmp_path_factory.mktemp("labdata")
    return make_data(out, seed=3, sizes=TINY_SIZES, image_size=64, corpus_scenes=40)


@pytest.fixture(scope="session")
def tiny_towers(tiny_data, tmp_path_factory) -> tuple[Path, Path]:
    """CLIP and LM trained for two steps (weights only matter for shapes here)."""
    from modalign_lab.towers.train import train_clip, train_lm

    from modalign.train.fit import TrainConfig

    root = tmp_path_factory.mktemp("towers")
    cfg = TrainConfig(steps=2, batch_size=8, lr=1e-3, log_steps=1, progress=False)
    train_clip(tiny_data, root / "clip", TINY_CLIP, cfg)
    train_lm(tiny_data, root / "lm", TINY_LM, cfg, block_size=32)
    return root / "clip", root / "lm"


@pytest.fixture(scope="session")
def tiny_llava(tiny_data, tiny_towers, tmp_path_factory) -> Path:
    """A saved tiny LLaVA (lab towers + a seeded fresh connector): load it with `load_llava`."""
    from modalign_lab.towers.llava import build_processor, llava_from_towers, save_llava
    from modalign_lab.towers.train import load_tokenizer
    from transformers import CLIPModel, LlamaForCausalLM

    clip_dir, lm_dir = tiny_towers
    tok = load_tokenizer(tiny_data)
    clip = CLIPModel.from_pretrained(clip_dir / "model")
    model = llava_from_towers(clip, LlamaForCausalLM.from_pretrained(lm_dir / "model"), tok, seed=0)
    vision = clip.config.vision_config
    proc = build_processor(tok, vision.image_size, vision.patch_size)
    return save_llava(model, proc, tmp_path_factory.mktemp("tiny_llava") / "model")
