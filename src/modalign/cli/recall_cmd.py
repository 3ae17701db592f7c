"""`modalign recall`: the words an LVLM's image tokens sit nearest to (SEA's Figure 1).

    modalign recall --model runs/pt/model --images probe/ --words words.txt --n 4 --plot grid.png

For each image token the connector hands the LLM (layer 0), the nearest words of the word list in
the LLM's input-embedding space (cosine to the mean embedding of each word's sub-tokens).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    """Add the arguments of `modalign recall`."""
    p.description = __doc__.split("\n\n")[0]
    p.add_argument("--model", required=True, help="LLaVA-family checkpoint folder or id")
    p.add_argument("--images", type=Path, required=True, help="image folder")
    p.add_argument("--words", type=Path, required=True, help="word list, one per line")
    p.add_argument("--n", type=int, default=4, help="images to show (seeded choice, default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top-k", type=int, default=1, help="words per token in the table")
    p.add_argument("--plot", type=Path, help="PNG of the first image's grid with its words")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import math

    import torch

    from modalign.atomic import check_writable
    from modalign.data import load_images, seeded_order
    from modalign.errors import ConfigError
    from modalign.methods.sea.label_cache import load_words
    from modalign.methods.sea.recall import plot_recall, recalled_words
    from modalign.models.loading import load_model, load_processor

    if args.plot:
        check_writable(args.plot, "--plot")
    if args.n < 1:
        raise ConfigError("--n must be >= 1")
    words = load_words(args.words)
    items = load_images(args.images)
    chosen = [
        items[i]
        for i, _ in zip(seeded_order(len(items), args.seed, "recall"), range(args.n), strict=False)
    ]
    images = [item.load() for item in chosen]
    model = load_model(args.model, torch.device("cpu"), torch.float32)
    processor = load_processor(args.model)
    top, cos = recalled_words(model, processor, images, words, k=args.top_k)
    for item, t, c in zip(chosen, top, cos, strict=True):
        side = math.isqrt(t.shape[0])
        print(f"{item.image_id}  ({t.shape[0]} image tokens)")
        cells = ["/".join(words[int(w)] for w in row) for row in t]
        width = max(len(x) for x in cells)
        step = side if side * side == t.shape[0] else t.shape[0]
        for r in range(0, len(cells), step):
            print("  " + " ".join(x.ljust(width) for x in cells[r : r + step]))
        print(f"  mean cosine of the top word: {float(c[:, 0].mean()):.3f}")
    if args.plot:
        plot_recall(images[0], [words[int(w)] for w in top[0, :, 0]], args.plot,
                    title=f"{chosen[0].image_id}: recalled word per image token")  # fmt: skip
        print(f"wrote {args.plot}")
    return 0
