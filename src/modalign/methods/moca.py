"""MoCa, learnable modality calibration (MIR paper §3.4, eq. 5): after every decoder layer k,
vision-token hidden states become u_k * h + v_k; every other position is left untouched.

    moca = attach_moca(model)             # u = 1, v = 0: the model is unchanged until trained
    ...train (model.moca.scale / .shift, shape (K, d), float32)...
    detach_moca(model)

How it attaches (no forked model code, any family whose `get_decoder().layers` are the decoder
layers and whose config names an image token):
- `model.moca` is a submodule, so `.to()`, DDP, optimizers and `state_dict` (keys `moca.scale`,
  `moca.shift`) see it; its settings are recorded in `config.modalign_extensions["moca"]` so a
  saved checkpoint rebuilds it (`modalign.models.surgery.extensions`).
- A forward pre-hook on the top-level model reads `input_ids` and keeps the vision mask
  `input_ids == config.image_token_id` (padding excluded through a 2-D `attention_mask`) for the
  duration of that call.
- A forward hook on each decoder layer (placed before any other forward hook, so transformers'
  `output_hidden_states` records the calibrated states, as the paper's MIR on MoCa models
  does) replaces the layer output: after the MLP residual add, before the next layer and the
  final norm. Only prefill is touched: as the official `hidden_states.shape[1] > 1` guard, a
  one-token step (incremental decoding) passes through.

Numerics: u, v are float32 whatever the model dtype (bf16 cannot hold 1 + 2e-5; `.half()`,
`.to(torch.bfloat16)` move them but keep float32). The affine map is computed in float32 (float64
for a float64 model) on the vision rows only and cast back; other positions are bit-identical to
the model without MoCa. Vision rows are gathered rather than blended with `torch.where` over the
whole sequence: same values, and autograd keeps a float32 copy of the vision rows only.

Calls the mask cannot be derived for, and what happens:
- `inputs_embeds` without `input_ids` (prefill): a ModelError, unless the caller gives the mask
  with `with model.moca.vision_mask(mask): model(inputs_embeds=...)`.
- A mask whose (batch, length) differs from the hidden states: a ModelError, never a guess.
- Gradient checkpointing: transformers 5.x checkpoints the layer `forward`, so these hooks run
  once, outside the checkpoint, and autograd keeps the mask. Wrappers that re-run a whole module
  call in backward (hooks inside the checkpoint) get the mask of the last top-level forward:
  call backward before the next forward, as every training loop does.
Image tokens only (not Qwen's video tokens): the official code and MIR's vision set.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from torch import nn

from modalign.errors import ConfigError, ModelError
from modalign.methods.extension_record import forget_extension, record_extension

__all__ = ["MoCa", "attach_moca", "detach_moca", "get_moca", "image_token_id", "rebuild_moca"]

# Name of the submodule on the top-level model (so state-dict keys are `moca.scale/shift`).
ATTR = "moca"


def _check_std(std: float) -> None:
    """ConfigError unless `std` (the initial spread of u and v) is finite and >= 0."""
    if not std >= 0.0 or std == float("inf"):
        raise ConfigError(f"MoCa std must be a finite number >= 0, got {std!r}")


class MoCa(nn.Module):
    """Per-layer scale u (K, d) and shift v (K, d), float32; identity at init (std 0)."""

    def __init__(
        self,
        num_layers: int,
        hidden_size: int,
        *,
        std: float = 0.0,
        seed: int = 0,
        image_token_id: int | None = None,
    ) -> None:
        super().__init__()
        if num_layers < 1 or hidden_size < 1:
            raise ConfigError(f"MoCa needs >= 1 layer and width, got {num_layers}x{hidden_size}")
        _check_std(std)
        self.std, self.seed, self.image_token_id = float(std), int(seed), image_token_id
        scale = torch.ones(num_layers, hidden_size, dtype=torch.float32)  # (K, d)
        shift = torch.zeros(num_layers, hidden_size, dtype=torch.float32)  # (K, d)
        if std > 0:  # the official moca_std: per layer, scale ~ N(1, std) then shift ~ N(0, std)
            g = torch.Generator().manual_seed(self.seed)
            for k in range(num_layers):
                scale[k] = torch.normal(1.0, std, (hidden_size,), generator=g)
                shift[k] = torch.normal(0.0, std, (hidden_size,), generator=g)
        self.scale = nn.Parameter(scale)
        self.shift = nn.Parameter(shift)
        # Call state (not module state): masks of the top-level forwards in flight, an explicit
        # mask given by `vision_mask`, and the last forward's mask for recompute in backward.
        self._masks: list[torch.Tensor | None] = []
        self._given: torch.Tensor | None = None
        self._last: torch.Tensor | None = None

    @property
    def num_layers(self) -> int:
        return self.scale.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.scale.shape[1]

    def settings(self) -> dict[str, Any]:
        """What rebuilding this module needs (JSON-ready; recorded in the model config)."""
        return {"num_layers": self.num_layers, "hidden_size": self.hidden_size,
                "std": self.std, "seed": self.seed}  # fmt: skip

    def extra_repr(self) -> str:
        return f"layers={self.num_layers}, hidden={self.hidden_size}, std={self.std}"

    def _apply(self, fn: Any, recurse: bool = True) -> MoCa:
        """Follow device moves but keep u, v in float32 (a dtype cast of the model skips them)."""

        def keep_dtype(t: torch.Tensor) -> torch.Tensor:
            out = fn(t)
            if out.dtype != t.dtype and t.is_floating_point() and out.is_floating_point():
                return t.to(device=out.device)
            return out

        return super()._apply(keep_dtype, recurse)

    # ------------------------------------------------------------------ the map

    def calibrate(self, layer: int, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """hidden (B, T, d) with rows where mask (B, T) is True replaced by u_k * h + v_k."""
        if hidden.dim() != 3 or hidden.shape[-1] != self.hidden_size:
            raise ModelError(
                f"MoCa: layer {layer} output has shape {tuple(hidden.shape)}; expected "
                f"(batch, length, {self.hidden_size})"
            )
        if mask.shape != hidden.shape[:2]:
            raise ModelError(
                f"MoCa: vision mask of shape {tuple(mask.shape)} does not match the hidden states "
                f"{tuple(hidden.shape[:2])} (batch, length) of layer {layer}; the input_ids seen "
                "by the model do not describe this sequence (pass the mask with "
                "`model.moca.vision_mask(mask)`)"
            )
        mask = mask.to(device=hidden.device, dtype=torch.bool)
        compute = torch.promote_types(hidden.dtype, torch.float32)
        u = self.scale[layer].to(hidden.device, compute)  # (d,)
        v = self.shift[layer].to(hidden.device, compute)  # (d,)
        rows = hidden[mask].to(compute)  # (N_vision, d)
        new = (rows * u + v).to(hidden.dtype)
        return hidden.index_put((mask,), new)  # out of place; other rows untouched

    def forward(self, layer: int, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.calibrate(layer, hidden, mask)

    # ------------------------------------------------------------------ the mask

    @contextmanager
    def vision_mask(self, mask: torch.Tensor) -> Iterator[None]:
        """Use `mask` (B, T) for the forwards inside the block instead of deriving it from
        `input_ids` (for `inputs_embeds` calls)."""
        if mask.dim() != 2:
            raise ModelError(f"MoCa: a vision mask is (batch, length), got {tuple(mask.shape)}")
        previous, self._given = self._given, mask.bool()
        try:
            yield
        finally:
            self._given = previous

    def _mask_from_call(self, args: tuple, kwargs: dict) -> torch.Tensor | None:
        """Vision mask of a top-level call: the given one, else from input_ids; None if unknown."""
        if self._given is not None:
            return self._given
        ids = kwargs.get("input_ids")
        if ids is None and args and isinstance(args[0], torch.Tensor):
            ids = args[0] if not args[0].is_floating_point() else None
        if ids is None or ids.dim() != 2 or ids.shape[1] == 0:
            return None
        if self.image_token_id is None:
            raise ModelError("MoCa: no image token id to locate the vision tokens")
        mask = ids == self.image_token_id  # (B, T)
        attention = kwargs.get("attention_mask")
        if isinstance(attention, torch.Tensor) and attention.shape == ids.shape:
            mask = mask & attention.to(mask.device).bool()
        return mask

    def _pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._masks.append(self._mask_from_call(args, kwargs))

    def _post_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if self._masks:
            self._last = self._masks.pop()

    def _current_mask(self, layer: int) -> torch.Tensor:
        if self._masks:
            mask = self._masks[-1]
            if mask is None:
                raise ModelError(
                    f"MoCa (layer {layer}): the model was called without input_ids (inputs_embeds "
                    "only), so the vision tokens cannot be located; pass input_ids, or give the "
                    "mask: `with model.moca.vision_mask(mask): model(inputs_embeds=...)`"
                )
            return mask
        if torch._C._current_graph_task_id() != -1 and self._last is not None:
            return self._last  # a checkpoint wrapper re-running the layer call in backward
        if self._given is not None:
            return self._given
        raise ModelError(
            f"MoCa (layer {layer}): a decoder layer ran outside a call of the model it is "
            "attached to, so no vision mask is known; call the top-level model, or give the mask "
            "with `model.moca.vision_mask(mask)`"
        )

    def _layer_hook(self, layer: int, module: nn.Module, args: tuple, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        if not isinstance(hidden, torch.Tensor):
            raise ModelError(
                f"MoCa: decoder layer {layer} returned {type(output).__name__}; expected a tensor "
                "or a tuple whose first item is the hidden states"
            )
        if hidden.dim() == 3 and hidden.shape[1] <= 1:  # decode step: untouched (official guard)
            return None
        new = self.calibrate(layer, hidden, self._current_mask(layer))
        return (new, *output[1:]) if isinstance(output, tuple) else new


def image_token_id(config: Any) -> int:
    """The id whose positions are vision tokens (`image_token_id` / `image_token_index`)."""
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    raise ModelError(
        f"{getattr(config, 'model_type', 'this model')}: config defines no image token id, so "
        "MoCa cannot find the vision tokens"
    )


def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    get = getattr(model, "get_decoder", None)
    layers = getattr(get(), "layers", None) if callable(get) else None
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise ModelError(
            f"{type(model).__name__}: no decoder layers at model.get_decoder().layers; "
            "MoCa supports decoder-only vision-language models"
        )
    return layers


def get_moca(model: nn.Module) -> MoCa | None:
    """The MoCa attached to `model`, or None."""
    module = getattr(model, ATTR, None)
    return module if isinstance(module, MoCa) else None


def attach_moca(model: nn.Module, *, std: float = 0.0, seed: int = 0) -> MoCa:
    """Add MoCa to every decoder layer of `model` (identity at std 0); returns `model.moca`.

    `std` > 0 draws u ~ N(1, std), v ~ N(0, std) from `seed` (the official `moca_std`); the
    parameters are created on the decoder's device, float32, requires_grad=True.
    """
    if get_moca(model) is not None:
        raise ModelError("MoCa is already attached to this model; detach_moca(model) first")
    if hasattr(model, ATTR):
        raise ModelError(f"the model already has an attribute {ATTR!r}; cannot attach MoCa")
    layers = _decoder_layers(model)
    hidden = int(model.config.get_text_config().hidden_size)
    moca = MoCa(
        len(layers), hidden, std=std, seed=seed, image_token_id=image_token_id(model.config)
    )
    first = next(layers.parameters(), None)
    if first is not None:
        moca.to(first.device)
    model.add_module(ATTR, moca)
    # Bound methods (through partial): a deepcopy of the model re-binds them to the copy's MoCa.
    model.register_forward_pre_hook(moca._pre_hook, with_kwargs=True, prepend=True)
    model.register_forward_hook(moca._post_hook, with_kwargs=True, always_call=True)
    for k, layer in enumerate(layers):
        layer.register_forward_hook(partial(moca._layer_hook, k), prepend=True)
    record_extension(model, ATTR, moca.settings())
    return moca


def rebuild_moca(model: nn.Module, settings: Mapping[str, Any]) -> MoCa:
    """MoCa attached from its recorded `settings` (`MoCa.settings()`), for a checkpoint being
    loaded: u, v are placeholders (the identity) until the checkpoint's values are copied in. A
    record made for another number of layers or width is a ModelError (nothing stays attached)."""
    std, seed = float(settings.get("std", 0.0)), int(settings.get("seed", 0))
    _check_std(std)
    moca = attach_moca(model)
    saved = (settings.get("num_layers"), settings.get("hidden_size"))
    if saved != (moca.num_layers, moca.hidden_size):
        detach_moca(model)
        raise ModelError(
            f"MoCa was saved for {saved[0]} layers x {saved[1]} dims but this model has "
            f"{moca.num_layers} x {moca.hidden_size}"
        )
    moca.std, moca.seed = std, seed
    record_extension(model, ATTR, moca.settings())
    return moca


def _owned_by(hook: Any, moca: MoCa) -> bool:
    fn = hook.func if isinstance(hook, partial) else hook
    return getattr(fn, "__self__", None) is moca


def detach_moca(model: nn.Module) -> MoCa:
    """Remove MoCa's hooks, submodule and config record; returns the detached module."""
    moca = get_moca(model)
    if moca is None:
        raise ModelError("no MoCa attached to this model")
    modules = [model, *_decoder_layers(model)]
    for module in modules:
        for hooks in (module._forward_pre_hooks, module._forward_hooks):
            for key in [k for k, h in hooks.items() if _owned_by(h, moca)]:
                del hooks[key]
                module._forward_pre_hooks_with_kwargs.pop(key, None)
                module._forward_hooks_with_kwargs.pop(key, None)
                module._forward_hooks_always_called.pop(key, None)
    delattr(model, ATTR)
    forget_extension(model, ATTR)
    return moca
