"""Load lab artefacts through the same Auto* classes real checkpoints use."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModelForImageTextToText, AutoProcessor


def load_llava(path: Path):
    """(model, processor) from a save_pretrained directory; clear error if it is not one."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a saved model directory (no config.json)")
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    return model, processor


def num_image_tokens(processor) -> int:
    """Image tokens the processor puts in place of one <image> (same rule as LlavaProcessor)."""
    crop = processor.image_processor.crop_size
    n = (crop["height"] // processor.patch_size) * (crop["width"] // processor.patch_size)
    n += processor.num_additional_image_tokens
    return n - 1 if processor.vision_feature_select_strategy == "default" else n
