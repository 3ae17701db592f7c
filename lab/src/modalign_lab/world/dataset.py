"""Write / read a lab dataset directory: PNG images, scenes.jsonl per split, corpus.txt."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from modalign.errors import ConfigError, DataError
from modalign_lab.world.captions import captions
from modalign_lab.world.corpus import build_corpus
from modalign_lab.world.render import render_scene
from modalign_lab.world.scene import Scene
from modalign_lab.world.splits import SPLITS, make_splits
from modalign_lab.world.vqa import QA, scene_vqa

FORMAT_VERSION = 1
DEFAULT_SIZES: dict[str, int] = {"train": 4000, "val": 200, "test": 300}


@dataclass(frozen=True)
class Record:
    """One image of a split with its captions (levels 0..3) and questions."""

    image_id: str
    image_path: Path
    captions: tuple[str, ...]
    vqa: tuple[QA, ...]
    scene: Scene  # the structure behind the image (hard-negative captions edit it)

    def load_image(self) -> Image.Image:
        """The RGB image."""
        with Image.open(self.image_path) as im:
            return im.convert("RGB")


def write_dataset(
    out: Path,
    *,
    seed: int = 0,
    sizes: dict[str, int] | None = None,
    image_size: int = 96,
    corpus_scenes: int = 20000,
    glyph_scale: int | None = None,
) -> Path:
    """Generate every split and the corpus under `out`; returns out/manifest.json.
    `glyph_scale`: see `render_scene` (None: the size's default)."""
    out = Path(out)
    sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
    splits = make_splits(seed, sizes)
    for split, scenes in splits.items():
        img_dir = out / split / "images"
        img_dir.mkdir(parents=True, exist_ok=True)
        with open(out / split / "scenes.jsonl", "w", encoding="utf-8") as f:
            for scene in scenes:
                render_scene(scene, image_size, glyph_scale).save(img_dir / f"{scene.scene_id}.png")
                f.write(json.dumps(_scene_row(scene, seed)) + "\n")
    corpus = build_corpus(seed, corpus_scenes)
    (out / "corpus.txt").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    manifest = {
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "image_size": image_size,
        **({"glyph_scale": glyph_scale} if glyph_scale is not None else {}),
        "sizes": sizes,
        "corpus_lines": len(corpus),
    }
    path = out / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path


def _scene_row(scene: Scene, seed: int) -> dict:
    """JSON line for one scene: structure, captions, questions."""
    row = scene.to_dict()
    row["captions"] = captions(scene)
    row["vqa"] = [
        {"type": q.qtype, "question": q.question, "answer": q.answer}
        for q in scene_vqa(scene, seed)
    ]
    return row


def read_manifest(root: Path) -> dict:
    """The dataset's manifest; clear error if `root` is not a lab dataset."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise DataError(
            f"{root} is not a lab dataset (no manifest.json); run `modalign lab data --out DIR`"
        )
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path}: unsupported format_version {manifest.get('format_version')!r}")
    return manifest


def load_split(root: Path, split: str, limit: int | None = None) -> list[Record]:
    """Records of one split (first `limit` if given)."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of {SPLITS}")
    read_manifest(root)
    path = Path(root) / split / "scenes.jsonl"
    if not path.is_file():
        raise DataError(f"{path} missing: the dataset has no {split!r} split")
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            records.append(
                Record(
                    image_id=row["id"],
                    image_path=Path(root) / split / "images" / f"{row['id']}.png",
                    captions=tuple(row["captions"]),
                    vqa=tuple(QA(q["type"], q["question"], q["answer"]) for q in row["vqa"]),
                    scene=Scene.from_dict(row),
                )
            )
            if limit is not None and len(records) >= limit:
                break
    return records


def load_corpus(root: Path) -> list[str]:
    """Non-empty lines of the text corpus."""
    read_manifest(root)
    text = (Path(root) / "corpus.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]
