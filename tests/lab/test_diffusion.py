"""The lab's VAE / denoiser / VQ model: trained on the world's images, reused, loadable."""

from __future__ import annotations

import json

import pytest
import torch
from modalign_lab.towers.diffusion import DiffusionSpec, make_diffusion, make_vq, world_images

from modalign.errors import ConfigError

diffusers = pytest.importorskip("diffusers")
SPEC = DiffusionSpec(vae_size=32, vae_channels=(8, 8, 8), vq_size=16, vq_channels=(8, 8, 8),
                     denoiser_head_dim=8, joint_dim=16, pooled_dim=16, steps=3, batch_size=4)  # fmt: skip


def test_parts_train_save_and_load(tiny_data, tmp_path):
    images = world_images(tiny_data, "train", 32)
    assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32)
    metrics = make_diffusion(tiny_data, tmp_path / "diffusion", SPEC)
    assert metrics["latent_shape"] == [4, 8, 8] and metrics["val_mse"] > 0
    vae = diffusers.AutoencoderKL.from_pretrained(tmp_path / "diffusion" / "vae")
    denoiser = diffusers.SD3Transformer2DModel.from_pretrained(
        tmp_path / "diffusion" / "transformer"
    )
    assert denoiser.config.sample_size == 8 and denoiser.config.joint_attention_dim == 16
    assert vae.config.sample_size == 32
    vq = make_vq(tiny_data, tmp_path / "vq", SPEC)
    assert vq["codes_per_image"] == 16 and 1 <= vq["codes_used_on_val"] <= SPEC.vq_codes
    assert diffusers.VQModel.from_pretrained(tmp_path / "vq").config.num_vq_embeddings == 64
    # Finished: reused as is; other settings in the same folder: refused.
    stamp = (tmp_path / "vq" / "metrics.json").stat().st_mtime_ns
    assert make_vq(tiny_data, tmp_path / "vq", SPEC) == vq
    assert (tmp_path / "vq" / "metrics.json").stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="other settings"):
        make_vq(tiny_data, tmp_path / "vq", DiffusionSpec(steps=1))
    assert json.loads((tmp_path / "vq" / "metrics.json").read_text())["settings"]["kind"] == "vq"
    assert not (tmp_path / "vq.tmp").exists()


def test_spec_for_world_encodes_the_full_resolution_image():
    spec = DiffusionSpec.for_world(288, steps=5)
    assert spec.vae_size == 288 and spec.steps == 5 and spec.vae_batch == 8
    side = 288 // 2 ** (len(spec.vae_channels) - 1)  # one /2 per block after the first
    assert side == 72 and side % spec.patch == 0 and (side // spec.patch) ** 2 == 144
    assert DiffusionSpec.for_world(96) == DiffusionSpec()  # the 96 px world: the lab's default
    with pytest.raises(ConfigError, match="multiple of 48"):
        DiffusionSpec.for_world(100)
