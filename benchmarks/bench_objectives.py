"""SEA label extraction throughput and the per-step overhead of each alignment objective.

    python benchmarks/bench_objectives.py --steps 100 --threads 2 --json benchmarks/results/objectives_cpu.json

On the shipped default's towers (the lab's real size) with a LiT text tower trained briefly on
its vision tower: SEA labels for 1024 images (images/s), from the patch tokens and from 3 x 3
region crops (9 more tower passes per image; `--labels-only` stops here), then 100 pre-training
steps each of the baseline, +SEA, +contrastive, +contrastive with prompts (seconds per step and
the ratio to the baseline). One run per configuration; compare ratios from the same invocation.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

CONFIGS = {
    "baseline": None,
    "sea": "sea:1,labels={labels}",
    "contrastive": "contrastive:1",
    "contrastive_prompt": "contrastive:1,prompt=true",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--labels-only", action="store_true", help="skip the step timings")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from dataclasses import replace

    from modalign_lab.pipeline.cycle import lab_recipe
    from modalign_lab.pipeline.sea import lit_clip
    from modalign_lab.towers.llava import build_image_processor, load_llava, reset_connector
    from modalign_lab.towers.train import load_tokenizer, make_data
    from modalign_lab.world.conversations import caption_conversations
    from modalign_lab.world.dataset import load_split
    from modalign_lab.world.vocab import label_words

    from modalign.assets import default_model_path
    from modalign.methods.objectives import ObjectiveSpec
    from modalign.methods.sea.labels import build_label_cache
    from modalign.train.fit import TrainConfig
    from modalign.train.recipe import prepare, train_stage

    work = Path(tempfile.mkdtemp(prefix="bench-objectives-"))
    base = default_model_path()
    data = make_data(work / "data", seed=0, sizes={"train": 1024, "val": 8, "test": 8},
                     image_size=96, corpus_scenes=10, tokenizer_from=base)  # fmt: skip
    lit = TrainConfig(steps=50, batch_size=64, lr=5e-4, progress=False)
    from transformers import CLIPModel

    clip = CLIPModel.from_pretrained(lit_clip(data, base, work / "clip", lit)).eval()
    images = [
        (r.image_path.relative_to(data).as_posix(), r.load_image) for r in load_split(data, "train")
    ]
    result: dict = {"threads": args.threads}
    for key, regions in (("labels", 0), ("region_labels", 3)):  # patch tokens; 3 x 3 crops
        t0 = time.perf_counter()
        build_label_cache(clip, load_tokenizer(data), build_image_processor(96), label_words(),
                          images, work / key, image_root=data.resolve(), progress=False,
                          regions=regions)  # fmt: skip
        label_s = time.perf_counter() - t0
        result[key] = {"images": len(images), "seconds": label_s, "regions": regions,
                       "images_per_s": len(images) / label_s}  # fmt: skip
        print(f"SEA {key} (regions {regions}): {len(images)} images in {label_s:.1f} s "
              f"({len(images) / label_s:.0f} images/s)", flush=True)  # fmt: skip
    if args.labels_only:
        _write(args.json, result)
        return
    convs = caption_conversations(load_split(data, "train"), 3)
    rows = []
    for name, objective in CONFIGS.items():
        recipe = lab_recipe("pretrain", TrainConfig(steps=args.steps, batch_size=32, lr=1e-3,
                                                    log_steps=50, progress=False))  # fmt: skip
        if objective:
            spec = ObjectiveSpec.parse(objective.format(labels=work / "labels"))
            recipe = replace(recipe, stage=replace(recipe.stage, objectives=(spec,)))
        model, processor = load_llava(base)
        reset_connector(model, 0)
        model, processor = prepare(model, processor, recipe)
        summary = train_stage(model, processor, convs, recipe, work / "runs" / name)
        rows.append({"config": name, "s_per_step": summary["runtime_s"] / summary["steps"]})
        print(f"{name}: {rows[-1]['s_per_step']:.4f} s/step", flush=True)
    for r in rows:
        r["ratio_vs_baseline"] = r["s_per_step"] / rows[0]["s_per_step"]
    print(f"{'config':<20} {'s/step':>8} {'ratio':>7}")
    for r in rows:
        print(f"{r['config']:<20} {r['s_per_step']:>8.4f} {r['ratio_vs_baseline']:>7.3f}")
    result["steps"] = rows
    _write(args.json, result)


def _write(path: Path | None, result: dict) -> None:
    print(json.dumps({k: v for k, v in result.items() if k != "steps"}))
    if path:
        from modalign.atomic import atomic_write_json

        atomic_write_json(path, result)


if __name__ == "__main__":
    main()
