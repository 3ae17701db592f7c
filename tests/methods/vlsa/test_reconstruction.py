"""Reconstructive objective: x0-prediction on rectified flow, frozen parts, loading, overfitting."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from modalign.errors import ConfigError, DataError
from modalign.methods.objectives import ForwardContext, ObjectiveSpec
from modalign.methods.vlsa.reconstruction import ReconstructionObjective, load_diffusion
from modalign.testing.tiny_diffusion import tiny_denoiser, tiny_vae, write_tiny_diffusion

diffusers = pytest.importorskip("diffusers")
D, MEAN, STD = 16, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


def _vae():
    return tiny_vae()


def _denoiser():
    return tiny_denoiser()


def _setup(objective, connector=None):
    model = SimpleNamespace(
        config=SimpleNamespace(text_config=SimpleNamespace(hidden_size=D)),
        model=SimpleNamespace(multi_modal_projector=connector),
    )
    processor = SimpleNamespace(image_processor=SimpleNamespace(image_mean=MEAN, image_std=STD))
    objective.setup(model, processor)
    return objective


def _ctx(tokens, pixels):
    mask = torch.ones(tokens.shape[0], tokens.shape[1], dtype=torch.bool)
    return ForwardContext(None, {"pixel_values": pixels}, None, tokens, mask, {})


def _pixels(n: int = 2, size: int = 24) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    images = torch.rand(n, 3, size, size, generator=g)
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    return (images - mean) / std  # as the processor normalises


class _Oracle(nn.Module):
    """A 'denoiser' that knows the clean latent: v = (z_t - z) / sigma, sigma = t / 1000."""

    def __init__(self, inner: nn.Module, z: torch.Tensor) -> None:
        super().__init__()
        self.inner, self.z, self.config = inner, z, inner.config
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, hidden_states, encoder_hidden_states, pooled_projections, timestep):
        sigma = (timestep / 1000.0).view(-1, 1, 1, 1)
        return SimpleNamespace(sample=(hidden_states - self.z) / sigma + 0 * self.weight)


def test_the_loss_is_x0_prediction_on_the_rectified_flow():
    vae = _vae()
    pixels = _pixels()
    probe = _setup(ReconstructionObjective.from_modules(vae, _denoiser()))
    with torch.no_grad():  # the clean latent, independently of the objective's forward
        images = pixels * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]
        images = torch.nn.functional.interpolate(
            images, size=(16, 16), mode="bilinear", antialias=True
        )
        z = vae.encode(images * 2 - 1).latent_dist.mode() * vae.config.scaling_factor
    assert torch.allclose(probe._images(pixels, 16), images * 2 - 1, atol=1e-6)
    oracle = _setup(ReconstructionObjective.from_modules(vae, _Oracle(_denoiser(), z)))
    tokens = torch.randn(2, 5, D)
    for _ in range(5):
        assert oracle(_ctx(tokens, pixels))["rec"] < 1e-8  # the exact velocity gives z back
    assert probe(_ctx(tokens, pixels))["rec"] > 1e-3


def test_only_epigone_and_the_connector_train_in_stage_one():
    vae, denoiser = _vae(), _denoiser()
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    objective = _setup(ReconstructionObjective.from_modules(vae, denoiser, rank=8))
    tokens = torch.randn(2, 5, D, requires_grad=True)
    objective(_ctx(tokens, _pixels()))["rec"].backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    assert all(p.grad is not None for p in objective.epigone.parameters())
    assert all(p.grad is None for p in [*vae.parameters(), *denoiser.parameters()])
    assert {k.split(".")[0] for k in objective.state_dict()} == {"epigone"}
    assert all(torch.equal(before[k], v) for k, v in vae.state_dict().items())
    assert objective.epigone.tokens[0].weight.shape == (8, D)  # the low-rank bottleneck


def test_denoiser_trains_and_the_loss_falls_on_a_tiny_overfit_example():
    torch.manual_seed(0)
    objective = _setup(ReconstructionObjective.from_modules(_vae(), _denoiser(), rank=16,
                                                            train_denoiser=True))  # fmt: skip
    assert {k.split(".")[0] for k in objective.state_dict()} == {"epigone", "denoiser"}
    tokens = nn.Parameter(torch.randn(2, 5, D))
    pixels = _pixels()
    opt = torch.optim.Adam([tokens, *objective.parameters()], lr=3e-3)
    losses = []
    for _ in range(150):
        loss = objective(_ctx(tokens, pixels))["rec"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.5 * first, (first, last)


def test_pooled_token_choice_and_bad_settings(tmp_path):
    from modalign.methods.connectors import build_connector

    perceiver = build_connector("sa_perceiver:num_heads=2", 8, D, 9)
    tiled = build_connector("tiled", 8, D, 9)  # tiles but no global token: the mean
    for connector, pooled in ((perceiver, "last"), (tiled, "mean"), (None, "mean")):
        objective = ReconstructionObjective.from_modules(_vae(), _denoiser())
        assert _setup(objective, connector).pooled_from == pooled
    with pytest.raises(ConfigError, match="sampling"):
        ReconstructionObjective(sampling="cosine")
    with pytest.raises(ConfigError, match="diffusion=FOLDER"):
        _setup(ReconstructionObjective())
    with pytest.raises(ConfigError, match="not a diffusion folder"):
        load_diffusion(tmp_path)
    objective = _setup(ReconstructionObjective.from_modules(_vae(), _denoiser()))
    with pytest.raises(DataError, match="one image"):
        objective(_ctx(torch.randn(3, 5, D), _pixels(2)))


def test_loads_a_pipeline_folder_through_the_spec(tmp_path):
    write_tiny_diffusion(tmp_path)
    objective = ObjectiveSpec.parse(
        f"reconstruction:0.5,diffusion={tmp_path},rank=4,image_size=32"
    ).build()
    assert objective.weight == 0.5 and objective.rank == 4 and objective.image_size == 32
    _setup(objective)
    loss = objective(_ctx(torch.randn(2, 5, D), _pixels()))["rec"]
    assert torch.isfinite(loss)
