"""How hard does the reconstruction loss pull on the SA-Perceiver, next to the LM loss?

Gradient of each term w.r.t. the connector's parameters, on pre-training batches (plain
template, level-3 captions), for a pre-trained `sa_perceiver_rec` point (its trained Epigone and
denoiser from objectives.safetensors; STAGE is its pre-training folder; DATA its world; BATCHES
of 32, default 4). Ad hoc, kept for the record of docs/studies/reports/vlsa-diagnostics:

    python scripts/vlsa_grad_ratio.py STAGE DATA [BATCHES]
    python scripts/vlsa_grad_ratio.py RUNS/vlsa/sa_perceiver_rec/seed0/pretrain RUNS/vlsa/data-seed0 2
"""

import json
import sys
from pathlib import Path

import torch
from modalign_lab.towers.llava import load_llava
from modalign_lab.world.conversations import caption_conversations
from modalign_lab.world.dataset import load_split
from safetensors.torch import load_file

from modalign.data.conversations import ConversationDataset
from modalign.methods.vlsa.reconstruction import ReconstructionObjective
from modalign.models.collate import TEMPLATES
from modalign.train.loss import compute_loss

point, data = Path(sys.argv[1]), Path(sys.argv[2])
batches = int(sys.argv[3]) if len(sys.argv) > 3 else 4
torch.manual_seed(0)
settings = json.loads((point / "stage_settings.json").read_text())
(spec,) = settings["stage"]["objectives"]
model, processor = load_llava(point / "model")
objective = ReconstructionObjective(spec["weight"], **dict(spec["options"]))
objective.setup(model, processor)
state = load_file(str(point / "objectives.safetensors"))
prefix = next(iter(state)).split(".")[0] + "."  # the ModuleList index
objective.load_state_dict({k[len(prefix) :]: v for k, v in state.items()})
connector = model.model.multi_modal_projector
params = [(n, p) for n, p in connector.named_parameters()]
for _, p in params:
    p.requires_grad_(True)
collate = TEMPLATES["plain"](processor, 2048, connector_text=False, extras=(), end="eos")
dataset = ConversationDataset(caption_conversations(load_split(data, "train", 32 * batches), 3))


def flat(grads: tuple) -> torch.Tensor:
    """One vector of the connector's gradients (zeros where a term does not reach a parameter)."""
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                      for g, (_, p) in zip(grads, params, strict=True)])  # fmt: skip


rows = []
for b in range(batches):
    batch = collate([dataset[i] for i in range(32 * b, 32 * (b + 1))])
    result = compute_loss(model, batch, [objective])
    lm, rec = result.outputs.loss, result.loss - result.outputs.loss  # rec: weighted term
    g_lm = torch.autograd.grad(lm, [p for _, p in params], retain_graph=True, allow_unused=True)
    g_rec = torch.autograd.grad(rec, [p for _, p in params], allow_unused=True)
    a, r = flat(g_lm), flat(g_rec)
    per: dict[str, list[float]] = {}
    for (name, _), gl, gr in zip(params, g_lm, g_rec, strict=True):
        sums = per.setdefault(name.split(".")[0], [0.0, 0.0])
        sums[0] += float(gl.norm() ** 2) if gl is not None else 0.0
        sums[1] += float(gr.norm() ** 2) if gr is not None else 0.0
    rows.append({
        "lm": lm.item(), "rec_weighted": rec.item(),
        "grad_norm_lm": a.norm().item(), "grad_norm_rec": r.norm().item(),
        "rec_over_lm": (r.norm() / a.norm()).item(),
        "cosine": torch.nn.functional.cosine_similarity(a, r, dim=0).item(),
        "per_module_rec_over_lm": {g: (v[1] / max(v[0], 1e-24)) ** 0.5 for g, v in per.items()},
    })  # fmt: skip
print(json.dumps({"point": str(point), "weight": objective.weight, "batches": rows}, indent=1))
