"""The miniature world's VLSA parts, trained on its own images with diffusers' classes: a tiny
AutoencoderKL (the frozen VAE of the reconstructive objective), a fresh SD3Transformer2DModel
denoiser (trained with the objective: there is no small pre-trained one to start from), and a
tiny VQModel (the frozen tokenizer of the VQ cognition turns).

    make_diffusion(data, "runs/vlsa/diffusion")   # diffusion/vae, diffusion/transformer
    make_vq(data, "runs/vlsa/vq")                 # vq/ (a VQModel folder)

Each writes its folder at the end (atomically, via a temporary sibling) with metrics.json
(held-out reconstruction error); a finished folder with the same settings is reused.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from modalign.atomic import atomic_write_json
from modalign.errors import ConfigError
from modalign_lab.world.dataset import Record, load_split

__all__ = [
    "DiffusionSpec",
    "as_vae_input",
    "make_diffusion",
    "make_vq",
    "record_images",
    "world_images",
]


@dataclass(frozen=True)
class DiffusionSpec:
    """Sizes and training of the tiny autoencoder, denoiser and VQ model."""

    vae_size: int = 96  # the VAE sees the image (or tiled canvas) at this size (for_world)
    vae_channels: tuple[int, ...] = (16, 32, 32)  # one /2 per block after the first: 96 -> 24
    latent_channels: int = 4
    denoiser_layers: int = 2
    denoiser_heads: int = 2
    denoiser_head_dim: int = 32
    joint_dim: int = 64  # width of the condition tokens (Epigone's output)
    pooled_dim: int = 64
    patch: int = 2  # denoiser patch: (24 / 2)^2 = 144 latent tokens
    vq_size: int = 32
    vq_channels: tuple[int, ...] = (16, 32, 32, 32)  # 32 -> 4: 16 codes per image
    vq_codes: int = 64
    steps: int = 600
    batch_size: int = 16
    vae_batch: int | None = None  # the autoencoder's batch (None: batch_size)
    lr: float = 1e-3
    kl_weight: float = 1e-6
    seed: int = 0

    @classmethod
    def for_world(cls, image_size: int, **changes: Any) -> DiffusionSpec:
        """The spec for a world of `image_size` px images: the VAE encodes the image itself at
        full resolution (VLSA encodes X, not the low-res view, so its fine detail is in the
        target), two /2 stages (latent side image_size / 4) and the denoiser patch that keeps
        (side / patch)^2 = 144 latent tokens. Above 96 px the VAE's first blocks are halved in
        width: 288 px costs ~1.2 s per step of 8 images on 2 CPU cores instead of 4-12 s."""
        if image_size % 48:
            raise ConfigError(f"image size {image_size} is not a multiple of 48 (latent side / 12)")
        wide = image_size <= 96
        return cls(
            vae_size=image_size,
            vae_channels=(16, 32, 32) if wide else (8, 16, 32),
            patch=image_size // 48,
            vae_batch=None if wide else 8,
            **changes,
        )


def world_images(data: Path, split: str, size: int, limit: int | None = None) -> torch.Tensor:
    """(N, 3, size, size) uint8 images of a split, resized (area-averaged) to `size`."""
    return record_images(load_split(data, split, limit), size)


def record_images(records: Sequence[Record], size: int) -> torch.Tensor:
    """(N, 3, size, size) uint8 images of `records`, resized (area-averaged) to `size`."""
    from PIL import Image

    arrays = [
        np.asarray(r.load_image().convert("RGB").resize((size, size), Image.Resampling.BOX))
        for r in records
    ]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def as_vae_input(batch: torch.Tensor) -> torch.Tensor:
    """uint8 images (B, 3, H, W) -> the autoencoders' input in [-1, 1]."""
    return batch.float() / 127.5 - 1.0


def _blocks(channels: tuple[int, ...]) -> dict[str, Any]:
    n = len(channels)
    return {
        "down_block_types": ("DownEncoderBlock2D",) * n,
        "up_block_types": ("UpDecoderBlock2D",) * n,
        "block_out_channels": tuple(channels),
        "layers_per_block": 1,
        "norm_num_groups": min(8, min(channels)),
        "mid_block_add_attention": False,  # attention over every latent cell: too slow on CPU
    }


def _train(
    model: torch.nn.Module,
    images: torch.Tensor,
    loss_of: Callable[[torch.Tensor], torch.Tensor],
    spec: DiffusionSpec,
    name: str,
) -> list[float]:
    """Adam with linear warmup (5%) and cosine decay; returns the loss every 100 steps."""
    g = torch.Generator().manual_seed(spec.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.0)
    warm = max(1, spec.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / spec.steps)))
        ),
    )
    model.train()
    log, running, t0 = [], 0.0, time.perf_counter()
    for step in range(spec.steps):
        index = torch.randint(0, images.shape[0], (spec.batch_size,), generator=g)
        loss = loss_of(as_vae_input(images[index]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += loss.item()
        if (step + 1) % 100 == 0 or step + 1 == spec.steps:
            k = (step % 100) + 1
            log.append(round(running / k, 5))
            running = 0.0
            rate = (step + 1) / (time.perf_counter() - t0)
            print(f"[{name}] step {step + 1}/{spec.steps} loss {log[-1]:.4f} ({rate:.1f} it/s)",
                  file=sys.stderr, flush=True)  # fmt: skip
    model.eval()
    return log


def _fit(
    model: torch.nn.Module,
    loss_of: Callable[[torch.Tensor], torch.Tensor],
    spec: DiffusionSpec,
    data: Path,
    size: int,
    name: str,
) -> tuple[list[float], torch.Tensor]:
    """Train on the train split at `size` px; the loss log and 64 val images in [-1, 1]."""
    log = _train(model, world_images(data, "train", size), loss_of, spec, name)
    return log, as_vae_input(world_images(data, "val", size, 64))


def _finished(
    out: Path, kind: str, spec: DiffusionSpec, data: Path
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The settings record of a `kind` model, and its metrics if `out` already holds it."""
    record = json.loads(json.dumps({"kind": kind, **asdict(spec), "data": str(data)}))
    metrics = out / "metrics.json"
    if metrics.is_file():
        done = json.loads(metrics.read_text(encoding="utf-8"))
        if done.get("settings") == record:
            return record, done
        raise ConfigError(f"{out} holds a model trained with other settings; use a new folder")
    return record, None


def _publish(
    out: Path, modules: dict[str, torch.nn.Module], metrics: dict[str, Any]
) -> dict[str, Any]:
    """Save `modules` (subfolder -> model; "" for out itself) and metrics.json into a temporary
    sibling, then rename it to `out`: a killed run leaves no half-written model folder."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub, module in modules.items():
        module.save_pretrained(tmp / sub if sub else tmp)
    atomic_write_json(tmp / "metrics.json", metrics)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return metrics


def make_diffusion(data: Path, out: Path, spec: DiffusionSpec | None = None) -> dict[str, Any]:
    """Train the autoencoder on the train split, add a fresh denoiser; out/vae, out/transformer."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel

    spec = spec or DiffusionSpec()
    out = Path(out)
    record, done = _finished(out, "diffusion", spec, data)
    if done is not None:
        return done
    torch.manual_seed(spec.seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=spec.latent_channels,
        sample_size=spec.vae_size, **_blocks(spec.vae_channels),
    )  # fmt: skip

    def loss_of(x: torch.Tensor) -> torch.Tensor:
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        return F.mse_loss(recon, x) + spec.kl_weight * posterior.kl().mean()

    t = time.perf_counter()
    vae_spec = replace(spec, batch_size=spec.vae_batch or spec.batch_size)
    log, val = _fit(vae, loss_of, vae_spec, data, spec.vae_size, "vae")
    with torch.no_grad():
        latents = vae.encode(val).latent_dist.mode()
        err = F.mse_loss(vae.decode(latents).sample, val).item()
    latent_side = latents.shape[-1]
    if latent_side % spec.patch:
        raise ConfigError(f"latent side {latent_side} is not a multiple of patch {spec.patch}")
    denoiser = SD3Transformer2DModel(
        sample_size=latent_side, patch_size=spec.patch, in_channels=spec.latent_channels,
        out_channels=spec.latent_channels, num_layers=spec.denoiser_layers,
        attention_head_dim=spec.denoiser_head_dim, num_attention_heads=spec.denoiser_heads,
        joint_attention_dim=spec.joint_dim, caption_projection_dim=spec.denoiser_heads * spec.denoiser_head_dim,
        pooled_projection_dim=spec.pooled_dim, pos_embed_max_size=latent_side // spec.patch,
    )  # fmt: skip
    metrics = {
        "settings": record,
        "val_mse": round(err, 6),
        "latent_shape": list(latents.shape[1:]),
        "loss_every_100": log,
        "wall_s": round(time.perf_counter() - t, 1),
    }
    return _publish(out, {"vae": vae, "transformer": denoiser}, metrics)


def make_vq(data: Path, out: Path, spec: DiffusionSpec | None = None) -> dict[str, Any]:
    """Train the VQ model (MSE + commitment) on the train split; out/ is a VQModel folder."""
    from diffusers import VQModel

    spec = spec or DiffusionSpec()
    out = Path(out)
    record, done = _finished(out, "vq", spec, data)
    if done is not None:
        return done
    torch.manual_seed(spec.seed)
    vq = VQModel(
        in_channels=3, out_channels=3, latent_channels=spec.latent_channels,
        num_vq_embeddings=spec.vq_codes, vq_embed_dim=spec.latent_channels,
        sample_size=spec.vq_size, **_blocks(spec.vq_channels),
    )  # fmt: skip

    def loss_of(x: torch.Tensor) -> torch.Tensor:
        out = vq(x)
        return F.mse_loss(out.sample, x) + out.commit_loss.mean()

    t = time.perf_counter()
    log, val = _fit(vq, loss_of, spec, data, spec.vq_size, "vq")
    with torch.no_grad():
        latents = vq.encode(val).latents  # (64, d', h', w'), one encoder pass for both figures
        quantized, _, (_, _, codes) = vq.quantize(latents)
        err = F.mse_loss(vq.decode(quantized, force_not_quantize=True).sample, val).item()
    used = int(torch.unique(codes).numel())
    metrics = {
        "settings": record,
        "val_mse": round(err, 6),
        "codes_per_image": int(latents.shape[-1] * latents.shape[-2]),
        "codes_used_on_val": used,
        "loss_every_100": log,
        "wall_s": round(time.perf_counter() - t, 1),
    }
    return _publish(out, {"": vq}, metrics)
