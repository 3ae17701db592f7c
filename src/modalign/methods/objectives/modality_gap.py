"""`mfid`: the modality gap as a loss, transcribed from the official MIR repository's `mfid_loss`.

The MIR authors left this commented out in their LLaMA forward (`loss + 1e-3 * mfid_loss(...)`);
it is not in the paper. Per decoder layer (hidden_states[1:]), over the batch: vision tokens, and
text tokens = every attended token after the last image token; both in float32, scaled by
1 / mean text-token norm; outlier rows (3-sigma on norms) replaced by the per-dimension median;
then ||mu_v - mu_t||^2 + tr S_v + tr S_t, the Fréchet distance WITHOUT its cross term
-2 tr (S_v S_t)^{1/2} (so it also shrinks both covariances). Mean over layers.
"""

from __future__ import annotations

import torch

from modalign.errors import DataError
from modalign.methods.objectives.base import OBJECTIVES, ForwardContext, Objective


def _replace_outliers_with_median(x: torch.Tensor) -> torch.Tensor:
    """Rows whose norm is > 3 std from the median norm become the per-dimension median."""
    norms = x.norm(dim=-1)  # (n,)
    outlier = (norms - norms.median()).abs() > 3 * norms.std()  # (n,)
    median = x.median(dim=0).values  # (d,)
    return torch.where(outlier[:, None], median[None, :], x)


def gap_without_cross_term(vision: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """||mu_v - mu_t||^2 + tr S_v + tr S_t of two token sets (n, d), unbiased covariances."""
    mu_v, mu_t = vision.mean(0), text.mean(0)
    tr_v = ((vision - mu_v) ** 2).sum() / (vision.shape[0] - 1)
    tr_t = ((text - mu_t) ** 2).sum() / (text.shape[0] - 1)
    return ((mu_v - mu_t) ** 2).sum() + tr_v + tr_t


@OBJECTIVES.register("mfid")
class ModalityGapObjective(Objective):
    """The official code's `mfid_loss` (default weight 1e-3, as it was used there)."""

    name = "mfid"
    needs_hidden_states = True

    def __init__(self, weight: float = 1e-3) -> None:
        super().__init__(weight)

    def forward(self, ctx: ForwardContext) -> dict[str, torch.Tensor]:
        vision_mask = ctx.require_vision(self.name)  # (B, T)
        attention = ctx.inputs.get("attention_mask")
        if attention is None:
            attention = torch.ones_like(vision_mask)
        attention = attention.bool()
        positions = torch.arange(vision_mask.shape[1], device=vision_mask.device)  # (T,)
        last_image = torch.where(vision_mask, positions, -1).max(dim=1).values  # (B,)
        text_mask = (positions[None, :] > last_image[:, None]) & attention  # (B, T)
        text_mask &= (last_image >= 0)[:, None]  # rows without an image contribute nothing
        if int(text_mask.sum()) < 2 or int(vision_mask.sum()) < 2:
            raise DataError(f"objective {self.name!r}: fewer than 2 vision or text tokens")
        total = 0.0
        layers = ctx.hidden_states[1:]
        for h in layers:  # (B, T, D) each
            vision = h[vision_mask & attention].float()  # (n_v, D)
            text = h[text_mask].float()  # (n_t, D)
            scale = 1.0 / text.norm(dim=-1).mean()
            vision = _replace_outliers_with_median(vision * scale)
            text = _replace_outliers_with_median(text * scale)
            total = total + gap_without_cross_term(vision, text)
        return {"mfid": total / len(layers)}
