"""Tiny diffusers models (random weights, built offline) for tests of the VLSA parts: an
AutoencoderKL, an SD3Transformer2DModel (MMDiT) and a VQModel, each a few thousand parameters.

    write_tiny_diffusion(folder)     # folder/vae, folder/transformer (diffusers pipeline layout)
    tiny_vq().save_pretrained(path)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = ["tiny_denoiser", "tiny_vae", "tiny_vq", "write_tiny_diffusion"]

_BLOCKS = {
    "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"),
    "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D"),
    "block_out_channels": (8, 16),
    "layers_per_block": 1,
    "norm_num_groups": 4,
}


def tiny_vae(sample_size: int = 16, seed: int = 0) -> Any:
    """AutoencoderKL: 3 -> 4 latent channels, /2 spatially."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=sample_size, **_BLOCKS
    )


def tiny_denoiser(
    latent_size: int = 8, joint_dim: int = 16, pooled_dim: int = 12, seed: int = 1
) -> Any:
    """SD3Transformer2DModel on 4-channel latents of `latent_size`, 2 layers."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(
        sample_size=latent_size, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=joint_dim,
        caption_projection_dim=16, pooled_projection_dim=pooled_dim, pos_embed_max_size=latent_size,
    )  # fmt: skip


def tiny_vq(sample_size: int = 16, codes: int = 32, seed: int = 0) -> Any:
    """VQModel: `codes` code vectors of width 4, latent grid sample_size / 2."""
    from diffusers import VQModel

    torch.manual_seed(seed)
    return VQModel(
        in_channels=3, out_channels=3, latent_channels=4, num_vq_embeddings=codes,
        vq_embed_dim=4, sample_size=sample_size, **_BLOCKS,
    )  # fmt: skip


def write_tiny_diffusion(folder: str | Path, sample_size: int = 16) -> Path:
    """Save a tiny VAE and denoiser in diffusers' pipeline layout (vae/, transformer/)."""
    folder = Path(folder)
    tiny_vae(sample_size).save_pretrained(folder / "vae")
    tiny_denoiser(sample_size // 2).save_pretrained(folder / "transformer")
    return folder
