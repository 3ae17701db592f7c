"""VLSA's reconstructive objective: the connector's tokens must let a latent denoiser rebuild the
image (eqs. 3-4; our reading of them: docs/methods.md, Reconstruction).

- z = frozen VAE latent of the image ((mode - shift) * scaling, diffusers conventions); the image
  is the batch's own pixels, un-normalised with the processor's mean / std and resized to the
  VAE's size (a tiled processor's whole high-resolution canvas);
- rectified flow as in diffusers' SD3 training: sigma from FlowMatchEulerDiscreteScheduler at a
  timestep drawn by `compute_density_for_timestep_sampling` (logit-normal by default),
  z_t = (1 - sigma) z + sigma eps;
- condition c = Epigone(tokens): a low-rank MLP Linear(D, r) -> SiLU -> Linear(r, joint dim) on
  every connector token (image tokens V and the global token P), and a Linear(D, pooled dim) on P
  (the SA-Perceiver's last token; the mean token for connectors without one);
- x0-prediction: z0_hat = z_t - sigma * v_hat (the denoiser, an SD3Transformer2DModel, predicts
  the velocity), L_rec = mean (z0_hat - z)^2.

The VAE is always frozen and is not part of the objective's state; the denoiser is frozen too
(VLSA's Stage I) unless `train_denoiser` (Stage II), then it trains and checkpoints with the
objective. `diffusion` is a folder in diffusers' pipeline layout (`vae/`, `transformer/`, as
Stable Diffusion 3 ships and the lab writes); Python users may pass modules to `from_modules`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modalign.errors import ConfigError, DataError, ModelError
from modalign.methods.objectives.base import OBJECTIVES, ForwardContext, Objective

__all__ = ["Epigone", "ReconstructionObjective", "load_diffusion"]

SAMPLINGS = ("logit_normal", "uniform", "mode")


def load_diffusion(folder: str | Path) -> tuple[nn.Module, nn.Module]:
    """(AutoencoderKL, SD3Transformer2DModel) from a diffusers pipeline folder."""
    root = Path(folder)
    missing = [sub for sub in ("vae", "transformer") if not (root / sub / "config.json").is_file()]
    if missing:
        raise ConfigError(
            f"{root} is not a diffusion folder: no {', '.join(missing)}/config.json (expected "
            "diffusers' pipeline layout with vae/ and transformer/, e.g. Stable Diffusion 3)"
        )
    from diffusers import AutoencoderKL, SD3Transformer2DModel

    vae = AutoencoderKL.from_pretrained(root / "vae")
    return vae, SD3Transformer2DModel.from_pretrained(root / "transformer")


class Epigone(nn.Module):
    """Connector tokens (B, M, D) -> denoiser condition (B, M, joint) and pooled (B, pooled)."""

    def __init__(self, width: int, rank: int, joint_dim: int, pooled_dim: int) -> None:
        super().__init__()
        self.tokens = nn.Sequential(nn.Linear(width, rank), nn.SiLU(), nn.Linear(rank, joint_dim))
        self.pooled = nn.Linear(width, pooled_dim)

    def forward(self, tokens: torch.Tensor, pooled: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.tokens(tokens), self.pooled(pooled)  # (B, M, joint), (B, pooled)


@OBJECTIVES.register("reconstruction")
class ReconstructionObjective(Objective):
    """See the module docstring. Options: `diffusion` (folder), `rank` (Epigone, 256),
    `sampling` (logit_normal | uniform | mode), `train_denoiser`, `pooled` (auto | last | mean),
    `image_size` (px the VAE encodes; 0: its config's sample_size, 1024 for SD3)."""

    name = "reconstruction"
    needs_connector_output = True

    def __init__(
        self,
        weight: float = 1.0,
        diffusion: str = "",
        rank: int = 256,
        sampling: str = "logit_normal",
        train_denoiser: bool = False,
        pooled: str = "auto",
        image_size: int = 0,
    ) -> None:
        super().__init__(weight)
        if sampling not in SAMPLINGS:
            raise ConfigError(
                f"reconstruction: sampling must be one of {SAMPLINGS}, got {sampling!r}"
            )
        if pooled not in ("auto", "last", "mean"):
            raise ConfigError(f"reconstruction: pooled must be auto, last or mean, got {pooled!r}")
        if rank < 1:
            raise ConfigError(f"reconstruction: rank must be >= 1, got {rank}")
        if image_size < 0:
            raise ConfigError(f"reconstruction: image_size must be >= 0, got {image_size}")
        self.image_size = image_size  # 0: the VAE's sample_size
        self.diffusion, self.rank, self.sampling = diffusion, rank, sampling
        self.train_denoiser, self.pooled_from = train_denoiser, pooled
        self.epigone: Epigone | None = None
        self.denoiser: nn.Module | None = None  # registered only when it trains
        self._frozen: dict[str, Any] = {}  # VAE (and a frozen denoiser): not in the state

    @classmethod
    def from_modules(
        cls, vae: nn.Module, denoiser: nn.Module, **options: Any
    ) -> ReconstructionObjective:
        """The objective with given diffusers modules instead of a `diffusion` folder."""
        objective = cls(**options)
        objective._attach(vae, denoiser)
        return objective

    def _attach(self, vae: nn.Module, denoiser: nn.Module) -> None:
        from diffusers import FlowMatchEulerDiscreteScheduler

        vae.requires_grad_(False).eval()
        self._frozen["vae"] = vae
        self._frozen["scheduler"] = FlowMatchEulerDiscreteScheduler()
        if self.train_denoiser:
            self.denoiser = denoiser.requires_grad_(True).train()
        else:
            self._frozen["denoiser"] = denoiser.requires_grad_(False).eval()

    def setup(self, model: Any, processor: Any) -> None:
        """Load the diffusion parts (unless given), build Epigone, read the processor's stats."""
        if "vae" not in self._frozen:
            if not self.diffusion:
                raise ConfigError(
                    "objective 'reconstruction' needs diffusion=FOLDER (vae/, transformer/)"
                )
            self._attach(*load_diffusion(self.diffusion))
        image_processor = getattr(processor, "image_processor", None)
        if image_processor is None:
            raise ModelError("objective 'reconstruction' needs a processor with an image processor")
        self._mean = torch.tensor(image_processor.image_mean, dtype=torch.float32)
        self._std = torch.tensor(image_processor.image_std, dtype=torch.float32)
        connector = getattr(getattr(model, "model", None), "multi_modal_projector", None)
        if self.pooled_from == "auto":
            self.pooled_from = "last" if getattr(connector, "global_token", False) else "mean"
        width = model.config.text_config.hidden_size
        denoiser = self._denoiser()
        if self.epigone is None:
            self.epigone = Epigone(
                width,
                self.rank,
                denoiser.config.joint_attention_dim,
                denoiser.config.pooled_projection_dim,
            )

    def _denoiser(self) -> nn.Module:
        return self.denoiser if self.denoiser is not None else self._frozen["denoiser"]

    def _images(self, pixel_values: torch.Tensor, size: int) -> torch.Tensor:
        """Processor pixels (B, 3, H, W) -> the VAE's input in [-1, 1], (B, 3, size, size)."""
        mean = self._mean.to(pixel_values.device)[:, None, None]
        std = self._std.to(pixel_values.device)[:, None, None]
        images = (pixel_values.float() * std + mean).clamp(0, 1)  # (B, 3, H, W) in [0, 1]
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
        return images * 2 - 1

    def _sigmas(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(timesteps, sigmas) of n draws, as diffusers' SD3 training script makes them."""
        from diffusers.training_utils import compute_density_for_timestep_sampling

        scheduler = self._frozen["scheduler"]
        u = compute_density_for_timestep_sampling(
            self.sampling, n, logit_mean=0.0, logit_std=1.0, mode_scale=1.29
        )
        index = (
            (u * scheduler.config.num_train_timesteps)
            .long()
            .clamp(max=scheduler.config.num_train_timesteps - 1)
        )
        return scheduler.timesteps[index].to(device), scheduler.sigmas[index].to(device)

    def forward(self, ctx: ForwardContext) -> dict[str, torch.Tensor]:
        ctx.require_vision(self.name)
        if self.epigone is None:
            raise RuntimeError("ReconstructionObjective.setup(model, processor) was not called")
        tokens = ctx.connector_output  # (B, M, D)
        pixels = ctx.inputs.get("pixel_values")
        if tokens is None or pixels is None or pixels.shape[0] != tokens.shape[0]:
            raise DataError(
                "objective 'reconstruction' needs one image (pixel_values row) per connector output"
            )
        vae, denoiser = self._frozen["vae"], self._denoiser()
        device = tokens.device
        if next(vae.parameters()).device != device:
            vae.to(device)
            denoiser.to(device)
        with torch.no_grad():
            images = self._images(pixels, self.image_size or vae.config.sample_size)
            latent = vae.encode(images.to(next(vae.parameters()).dtype)).latent_dist.mode()
            shift = vae.config.shift_factor or 0.0
            z = ((latent - shift) * vae.config.scaling_factor).float()  # (B, C, h, w)
        timesteps, sigmas = self._sigmas(z.shape[0], device)
        sigma = sigmas.view(-1, 1, 1, 1).float()
        noisy = (1 - sigma) * z + sigma * torch.randn_like(z)  # z_t
        pooled = tokens[:, -1] if self.pooled_from == "last" else tokens.mean(1)  # (B, D)
        cond, pooled = self.epigone(tokens.float(), pooled.float())
        dtype = next(denoiser.parameters()).dtype
        velocity = denoiser(
            hidden_states=noisy.to(dtype),
            encoder_hidden_states=cond.to(dtype),
            pooled_projections=pooled.to(dtype),
            timestep=timesteps,
        ).sample.float()  # (B, C, h, w)
        z0 = noisy - sigma * velocity  # x0-prediction (SD3's preconditioned output)
        return {"rec": F.mse_loss(z0, z)}
