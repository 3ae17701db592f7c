"""CLIP's symmetric InfoNCE with the negatives gathered from every process (open_clip's `ClipLoss`),
shared by SEA, the joint contrastive objective and the lab's CLIP (NegCLIP's hard negatives).

For N pairs (a_i, b_i) of unit-norm rows (all processes' pairs together), M extra B-side rows
e_k that are negatives only, and a logit scale s:

    L = 1/(2N) sum_i [ -log  exp(s a_i.b_i) / (sum_{j in V(i)} exp(s a_i.b_j) + sum_k exp(s a_i.e_k))
                       -log  exp(s b_i.a_i) /  sum_{j in V(i)} exp(s b_i.a_j) ]

where V(i) is every pair j except those j != i whose key equals key_i (pairs with the same key,
e.g. one word drawn on two processes, are not each other's negatives); without keys V(i) is all
N pairs. With one process, no keys and no extra rows this is exactly CLIP's loss.

The cross-process gather is `torch.distributed.nn.functional.all_gather`, the autograd-aware
collective: its backward sends every process the sum of all processes' gradients for its rows.
Each of the W processes computes the same global loss, so its rows get W times the one-process
gradient, and DDP's gradient averaging divides that back: the averaged gradients equal one
process's on the concatenated batch, for the features and the logit scale alike. A plain
`dist.all_gather` (open_clip's default, which puts the local rows back in their slot) returns
tensors without a graph: the local rows would get only their own process's share, 1/W of the
gradient after averaging, while the scale's gradient stays whole.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from modalign.errors import DataError, ModelError


def _world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) when not distributed."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def gather_rows(*tensors: torch.Tensor) -> tuple[list[torch.Tensor], int]:
    """Every process's rows of each tensor, concatenated in rank order, and the index of this
    process's first row in them; the tensors themselves (and 0) when not distributed.

    The tensors share their first dimension n, which may differ between processes (rows are
    padded to the longest for the collective and cut back). Gradients reach each process's own
    rows (see the module docstring); integer tensors (keys) travel the same way.
    """
    rank, world = _world()
    if world == 1:
        return list(tensors), 0
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_gather

    n = tensors[0].shape[0]
    if any(t.shape[0] != n for t in tensors):
        raise ModelError(
            f"gather_rows: tensors with different row counts {[len(t) for t in tensors]}"
        )
    count = torch.tensor([n], device=tensors[0].device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    width = max(sizes)
    out = []
    for t in tensors:
        if width == 0:
            out.append(t)
            continue
        padded = torch.cat([t, t.new_zeros(width - n, *t.shape[1:])]) if n < width else t
        with warnings.catch_warnings():  # torch >= 2.10 points to a private replacement
            warnings.filterwarnings("ignore", ".*all_gather is deprecated", FutureWarning)
            parts = all_gather(padded.contiguous())  # world x (width, ...)
        out.append(torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)]))  # (sum n, ...)
    return out, sum(sizes[:rank])


def infonce_from_logits(
    logits_ab: torch.Tensor,
    logits_ba: torch.Tensor,
    targets: torch.Tensor,
    reduction: str = "mean",
) -> torch.Tensor:
    """0.5 * (CE(logits_ab, targets) + CE(logits_ba, targets)): the loss once the logits exist.

    `logits_ab`: (n, N + M) each A row against every B row (extra negatives last); `logits_ba`:
    (n, N) each B row against every A row; `targets`: (n,) the column of each row's positive.
    """
    if logits_ab.ndim != 2 or logits_ba.ndim != 2 or targets.ndim != 1:
        raise ModelError("InfoNCE logits must be (rows, columns) and targets (rows,)")
    n = targets.shape[0]
    if logits_ab.shape[0] != n or logits_ba.shape[0] != n:
        raise ModelError(
            f"InfoNCE: {n} targets for logits {tuple(logits_ab.shape)} and {tuple(logits_ba.shape)}"
        )
    if logits_ab.shape[1] < logits_ba.shape[1]:
        raise ModelError(
            f"InfoNCE: the A side sees {logits_ab.shape[1]} B rows, fewer than the "
            f"{logits_ba.shape[1]} pairs (extra negatives are B rows after the positives)"
        )
    return 0.5 * (
        F.cross_entropy(logits_ab, targets, reduction=reduction)
        + F.cross_entropy(logits_ba, targets, reduction=reduction)
    )


def symmetric_infonce(
    a: torch.Tensor,
    b: torch.Tensor,
    logit_scale: torch.Tensor | float,
    *,
    extra_b: torch.Tensor | None = None,
    keys: torch.Tensor | None = None,
    local_loss: bool = False,
    name: str = "InfoNCE",
) -> torch.Tensor:
    """The symmetric InfoNCE (module docstring) of this process's pairs (a_i, b_i) against every
    process's pairs.

    `a`, `b`: (n, D) this process's pairs (normalised here); `logit_scale`: s, the multiplier
    (already exp'd); `extra_b`: (m, D) B-side rows that are negatives only (NegCLIP's hard
    negative captions); `keys`: (n,) integer ids, pairs with equal keys are not each other's
    negatives (SEA's words). `local_loss` (open_clip's option, only with several processes):
    this process's rows as queries against all columns, weighted so that the mean over processes
    is the global loss (the same gradients after DDP averaging, less compute per process).
    `name` prefixes the error raised when all processes together hold fewer than 2 pairs.
    """
    if a.ndim != 2 or a.shape != b.shape:
        raise ModelError(f"{name}: pairs must be two (n, D) tensors, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")  # fmt: skip
    if extra_b is not None and (extra_b.ndim != 2 or extra_b.shape[1] != a.shape[1]):
        raise ModelError(f"{name}: extra negatives must be (m, {a.shape[1]}), got "
                         f"{tuple(extra_b.shape)}")  # fmt: skip
    if keys is not None and (keys.shape != a.shape[:1] or keys.is_floating_point()):
        raise ModelError(f"{name}: keys must be {a.shape[0]} integers, got {tuple(keys.shape)} "
                         f"{keys.dtype}")  # fmt: skip
    a_n, b_n = F.normalize(a, dim=-1), F.normalize(b, dim=-1)  # (n, D) each
    local = [a_n, b_n] if keys is None else [a_n, b_n, keys]
    gathered, offset = gather_rows(*local)
    all_a, all_b = gathered[0], gathered[1]  # (N, D) each
    total = all_a.shape[0]
    if total < 2:
        raise DataError(
            f"{name}: the batch yields {total} pair(s) over all processes; InfoNCE needs at least "
            "2 (a single pair has no negatives; use a larger batch)"
        )
    columns = all_b
    if extra_b is not None:
        columns = torch.cat([all_b, gather_rows(F.normalize(extra_b, dim=-1))[0][0]])  # (N + M, D)
    world = _world()[1]
    local_loss = local_loss and world > 1
    # queries: every pair, or (local_loss) this process's n pairs, rows `rows` among all N
    queries = a_n if local_loss else all_a  # (q, D)
    rows = torch.arange(queries.shape[0], device=a.device) + (offset if local_loss else 0)  # (q,)
    logits_ab = logit_scale * queries @ columns.T  # (q, N + M)
    same = None
    if keys is not None:
        query_keys = keys if local_loss else gathered[2]  # (q,)
        same = query_keys[:, None] == gathered[2][None, :]  # (q, N), each row's own pair included
        if int(same.sum()) == len(rows):  # no key repeats: nothing to mask
            same = None
    if same is not None:
        own = torch.arange(len(rows), device=same.device)
        same[own, rows] = False  # a pair is its own positive, not a masked negative
        pad = same.new_zeros(len(rows), columns.shape[0] - total)  # extra negatives: never masked
        logits_ab = logits_ab.masked_fill(torch.cat([same, pad], dim=1), float("-inf"))
    if not local_loss:  # one (N, N + M) matrix serves both directions
        logits_ba = logits_ab.T if extra_b is None else logits_ab[:, :total].T  # (N, N)
        return infonce_from_logits(logits_ab, logits_ba, rows)
    logits_ba = logit_scale * b_n @ all_a.T  # (n, N)
    if same is not None:
        logits_ba = logits_ba.masked_fill(same, float("-inf"))
    loss = infonce_from_logits(logits_ab, logits_ba, rows, reduction="sum")
    return loss * (world / total)  # so that the mean over processes is the global mean


class InfoNCE(nn.Module):
    """`symmetric_infonce` as a loss module, open_clip's `ClipLoss` shape: options at
    construction (`local_loss`), features and the logit scale at call time."""

    def __init__(self, local_loss: bool = False, name: str = "InfoNCE") -> None:
        super().__init__()
        self.local_loss, self.name = local_loss, name

    def forward(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        logit_scale: torch.Tensor | float,
        extra_b: torch.Tensor | None = None,
        keys: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return symmetric_infonce(a, b, logit_scale, extra_b=extra_b, keys=keys,
                                 local_loss=self.local_loss, name=self.name)  # fmt: skip
