"""`modalign sea-labels`: SEA's word labels for every image patch, from a CLIP-style model pair.

    modalign sea-labels --clip openai/clip-vit-large-patch14-336 --words 2of12.txt \\
        --data blip_laion_cc_sbu_558k.json --image-folder images/ --out cache/sea [--top-n 10]

Resumable (re-run after a kill), refused when the folder holds labels of another model or word
list. Train with `modalign train --objective sea:1,labels=cache/sea`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    """Add the arguments of `modalign sea-labels`."""
    p.description = __doc__.split("\n\n")[0]
    p.add_argument(
        "--clip", required=True, help="CLIPModel / SiglipModel id or folder (both towers)"
    )
    p.add_argument("--words", type=Path, required=True, help="word list, one word per line (UTF-8)")
    p.add_argument("--images", type=Path, help="an image folder (ids: paths relative to it)")
    p.add_argument("--data", type=Path, help="a LLaVA conversation file: label its images")
    p.add_argument("--image-folder", type=Path, help="with --data: the folder its paths are under")
    p.add_argument("--out", type=Path, required=True, help="cache folder (resumable)")
    p.add_argument("--top-n", type=int, default=10, help="labels per patch (default 10, SEA's n)")
    p.add_argument("--sign", type=float, choices=[-1.0, 1.0], default=None,
                   help="rank by sign * cos (default: -1 for patch tokens as SEA, after CLIP "
                        "Surgery; +1 with --regions)")  # fmt: skip
    p.add_argument("--regions", type=int, default=0,
                   help="label G x G region crops, each embedded whole, instead of the patch "
                        "tokens (G divides the patch grid; for towers whose patch tokens do not "
                        "name their content; default 0: patch tokens)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda if available)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def _images(args) -> tuple[Path, list]:
    """(image root, [(id, loader)]) from --images or --data (each image once, in file order)."""
    from modalign.errors import ConfigError

    if (args.images is None) == (args.data is None):
        raise ConfigError("give exactly one of --images DIR or --data FILE")
    if args.images is not None:
        from modalign.data.images import load_images

        return args.images, [(item.image_id, item.load) for item in load_images(args.images)]
    from modalign.data.conversations import load_conversations
    from modalign.data.images import FileImageLoader

    convs = load_conversations(args.data, args.image_folder)
    root = args.image_folder or args.data.parent
    paths = dict.fromkeys(c.image for c in convs if c.image is not None)
    return root, [(p.relative_to(root).as_posix(), FileImageLoader(p)) for p in paths]


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    from modalign.methods.sea.label_cache import load_words
    from modalign.methods.sea.labels import build_label_cache
    from modalign.models.loading import NO_REMOTE_CODE, refuse_remote_code

    words = load_words(args.words)
    root, images = _images(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    refuse_remote_code(str(args.clip))
    model = AutoModel.from_pretrained(args.clip, **NO_REMOTE_CODE).to(device)
    cache = build_label_cache(
        model, AutoTokenizer.from_pretrained(args.clip, **NO_REMOTE_CODE),
        AutoImageProcessor.from_pretrained(args.clip, **NO_REMOTE_CODE),
        words, images, args.out, image_root=root.resolve(), top_n=args.top_n, sign=args.sign,
        regions=args.regions,
        batch_size=args.batch_size, progress=not args.quiet,
    )  # fmt: skip
    labelled = sum(int((i >= 0).any(-1).sum()) for i in cache.indices.values())
    patches = sum(i.shape[0] for i in cache.indices.values())
    used = len({int(w) for i in cache.indices.values() for w in i[i >= 0].tolist()})
    print(f"{len(cache.indices)} images, {labelled}/{patches} patches with a label, "
          f"{used}/{len(words)} words used; written to {args.out}")  # fmt: skip
    return 0
