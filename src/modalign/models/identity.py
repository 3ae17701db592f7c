"""What a model is, cheaply: a fingerprint of its config and of a sample of its weights, so a run
can tell whether it is resumed (or returned) with the model it was started from."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

__all__ = ["model_fingerprint"]

SAMPLE = 4096  # values read per tensor (evenly spaced); every tensor's shape and dtype count too


@torch.no_grad()
def model_fingerprint(model: Any) -> dict[str, Any]:
    """{"config": sha256, "weights": sha256, "tensors": n} of a loaded model. The config hash
    leaves out where it was loaded from and private keys; the weight hash covers every
    parameter and buffer (name, shape, dtype, `SAMPLE` evenly spaced values in float32), so a
    copy of the same checkpoint matches and another checkpoint does not."""
    config = {k: v for k, v in model.config.to_dict().items()
              if not k.startswith("_") and k != "transformers_version"}  # fmt: skip
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    weights = hashlib.sha256()
    tensors = dict(model.named_parameters())
    tensors.update(dict(model.named_buffers()))
    for name in sorted(tensors):
        t = tensors[name].detach()
        flat = t.reshape(-1)  # (numel,)
        if flat.numel() > SAMPLE:
            idx = torch.linspace(0, flat.numel() - 1, SAMPLE, device=flat.device).long()
            flat = flat[idx]  # (SAMPLE,)
        weights.update(json.dumps([name, list(t.shape), str(t.dtype)]).encode())
        weights.update(flat.to(torch.float32).cpu().numpy().tobytes())
    return {"config": config_hash.hexdigest(), "weights": weights.hexdigest(),
            "tensors": len(tensors)}  # fmt: skip
