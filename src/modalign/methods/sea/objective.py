"""SEA (Supervised Embedding Alignment): pull single vision tokens toward the LLM input embeddings
of the words a CLIP sees in their patch (SEA §4, eqs. 7-9).

Per batch: for every image and every k x k window of its patch grid, one patch is chosen
uniformly among the window's patches that have at least one label, and one of that patch's
labels is drawn with probability proportional to its CLIP score; when several pairs of the batch
share a label, one of them (chosen at random) is kept, so labels are unique. The connector's
output at each chosen patch and the label's feature (the mean LLM input embedding of the word's
sub-tokens, as the word appears mid-sentence) meet in a symmetric InfoNCE over the batch with
logits exp(s) * cos, s learnable, initialised to 0 (the paper's "tau = 0" read as log-temperature
0: tau = 1) and clamped to [0, ln 100] after each step (open_clip's convention). With several
processes the negatives are every process's pairs; the dedupe runs within each process, and a word
drawn on two processes gives two pairs that are not each other's negatives (the word is the key).
Labels come from a cache built by `modalign sea-labels` (modalign.methods.sea.labels).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from modalign.errors import ConfigError, DataError, ModelError
from modalign.methods.objectives.base import OBJECTIVES, ForwardContext, Objective
from modalign.methods.objectives.infonce import symmetric_infonce
from modalign.methods.sea.label_cache import LabelCache


def windows(grid: int, k: int) -> list[list[int]]:
    """Patch indices (row-major) of each k x k window tiling a grid x grid map (edge windows
    are smaller when k does not divide the grid)."""
    if k < 1:
        raise ConfigError(f"SEA window must be >= 1, got {k}")
    out = []
    for r0 in range(0, grid, k):
        for c0 in range(0, grid, k):
            out.append([r * grid + c for r in range(r0, min(r0 + k, grid))
                        for c in range(c0, min(c0 + k, grid))])  # fmt: skip
    return out


def sample_pairs(
    indices: torch.Tensor,
    scores: torch.Tensor,
    grid: int,
    window: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SEA's sampling for a batch of label maps: (image, patch, word) index tensors (N,).

    `indices`, `scores`: (B, P, n) word indices (-1 = none) and their scores. One patch per
    window (uniform among patches with a label), one label per patch (proportional to score),
    then one pair per distinct word (a random one of those sharing it).
    """
    valid = indices >= 0  # (B, P, n)
    has_label = valid.any(-1)  # (B, P)
    images, patches, words = [], [], []
    for b in range(indices.shape[0]):
        for win in windows(grid, window):
            cand = [p for p in win if bool(has_label[b, p])]
            if not cand:
                continue
            p = cand[int(torch.randint(len(cand), (1,), generator=generator))]
            weights = torch.where(valid[b, p], scores[b, p].float(), 0.0)  # (n,)
            j = int(torch.multinomial(weights, 1, generator=generator))
            images.append(b)
            patches.append(p)
            words.append(int(indices[b, p, j]))
    if not words:
        empty = torch.empty(0, dtype=torch.long)
        return empty, empty, empty
    order = torch.randperm(len(words), generator=generator).tolist()  # who keeps a shared label
    seen: set[int] = set()
    keep = []
    for i in order:
        if words[i] not in seen:
            seen.add(words[i])
            keep.append(i)
    keep.sort()
    pick = lambda xs: torch.tensor([xs[i] for i in keep], dtype=torch.long)  # noqa: E731
    return pick(images), pick(patches), pick(words)


def word_token_ids(tokenizer: Any, words: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, L) token ids of each word as it appears mid-sentence (after a space) and their mask.

    The word is tokenized inside "x <word>" and the tokens whose characters fall in the word are
    kept, which handles both byte-level BPE (" word") and SentencePiece ("▁word") vocabularies.
    """
    rows = []
    for word in words:
        text = f"x {word.strip()}"
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        start = len("x ")
        ids = [t for t, (a, b) in zip(enc["input_ids"], enc["offset_mapping"], strict=True)
               if b > start and b > a]  # fmt: skip
        if not ids:
            raise DataError(f"SEA label word {word!r} tokenizes to nothing")
        rows.append(ids)
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


@OBJECTIVES.register("sea")
class SEAObjective(Objective):
    """SEA's token-level alignment loss (see module docstring). Options: `labels` (cache dir),
    `window` (k, default 2), `logit_scale` (initial s, default 0), `max_logit_scale` (100)."""

    name = "sea"
    needs_connector_output = True
    batch_keys = ("image_paths",)

    def __init__(
        self,
        weight: float = 1.0,
        labels: str = "",
        window: int = 2,
        logit_scale: float = 0.0,
        max_logit_scale: float = 100.0,
    ) -> None:
        super().__init__(weight)
        if not labels:
            raise ConfigError(
                "objective 'sea' needs labels=CACHE (build it with `modalign sea-labels`)"
            )
        if window < 1 or max_logit_scale <= 1:
            raise ConfigError("objective 'sea': window >= 1 and max_logit_scale > 1 needed")
        self.cache = LabelCache.load(labels)
        self.labels_dir, self.window = labels, window
        self.max_log_scale = math.log(max_logit_scale)
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))
        self.register_buffer("word_ids", torch.empty(0, 0, dtype=torch.long), persistent=False)
        self.register_buffer("word_mask", torch.empty(0, 0), persistent=False)

    def setup(self, model: Any, processor: Any) -> None:
        """Tokenize the cache's words with the LLM's tokenizer (once, before training)."""
        ids, mask = word_token_ids(processor.tokenizer, self.cache.words)
        device = self.logit_scale.device
        self.word_ids, self.word_mask = ids.to(device), mask.to(device)

    def label_features(self, model: Any, words: torch.Tensor) -> torch.Tensor:
        """(N, D): mean input embedding of each word's sub-tokens."""
        if self.word_ids.numel() == 0:
            raise RuntimeError("SEAObjective.setup(model, processor) was not called")
        ids, mask = self.word_ids[words], self.word_mask[words]  # (N, L)
        emb = model.get_input_embeddings()(ids)  # (N, L, D)
        return (emb * mask[..., None].to(emb.dtype)).sum(1) / mask.sum(1, keepdim=True).to(
            emb.dtype
        )

    def forward(self, ctx: ForwardContext) -> dict[str, torch.Tensor]:
        ctx.require_vision(self.name)
        tokens = ctx.connector_output  # (B, M, D)
        grid = self.cache.grid
        if tokens.shape[1] != grid * grid:
            raise ModelError(
                f"SEA labels are on a {grid}x{grid} patch grid but the connector gives "
                f"{tokens.shape[1]} tokens per image; SEA needs a connector that keeps the grid "
                "(linear / MLP) and a CLIP with the LVLM's patch grid"
            )
        paths = ctx.extras.get("image_paths")
        if paths is None or len(paths) != tokens.shape[0]:
            raise DataError("objective 'sea' needs the batch's image paths (collator image_paths)")
        maps = [self.cache.labels(self.cache.image_id(p)) for p in paths]
        indices = torch.stack([m[0] for m in maps])  # (B, P, n)
        scores = torch.stack([m[1] for m in maps])  # (B, P, n)
        img, patch, word = sample_pairs(indices, scores, grid, self.window)
        device = tokens.device
        vision = tokens[img.to(device), patch.to(device)].float()  # (N, D)
        text = self.label_features(ctx.model, word.to(self.word_ids.device)).float()  # (N, D)
        scale = self.logit_scale.clamp(max=self.max_log_scale).exp()
        # at least 2 pairs over all processes, else a DataError (raised on every process alike)
        loss = symmetric_infonce(vision, text.to(device), scale, keys=word.to(device),
                                 name="objective 'sea'")  # fmt: skip
        return {"sea": loss}

    def after_optimizer_step(self) -> None:
        with torch.no_grad():
            self.logit_scale.clamp_(0.0, self.max_log_scale)

    def extra_logs(self) -> dict[str, float]:
        return {"logit_scale": float(self.logit_scale.detach().exp())}
