"""Tiny builders and the image-only processor fallback."""

from __future__ import annotations

import json

import pytest

from modalign.models.processor_compat import image_only, processor_class_for
from modalign.testing.tiny_vlms import build_tiny, tiny_families
from tests.models.conftest import FAMILIES


def test_every_supported_family_has_a_builder():
    assert set(FAMILIES) | {"mllama"} == set(tiny_families())


def test_unknown_family_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown tiny model family 'nope'"):
        build_tiny("nope", tmp_path)


def test_saved_as_safetensors_with_the_real_processor_class(tiny_dir):
    path = tiny_dir("qwen2_vl")
    assert (path / "model.safetensors").is_file()
    assert not list(path.glob("*.bin"))
    cfg = json.loads((path / "processor_config.json").read_text())
    assert cfg["processor_class"] == "Qwen2VLProcessor"


def test_image_only_processor_keeps_name_and_drops_video():
    from transformers import LlavaProcessor, Qwen2VLProcessor

    cls = image_only(Qwen2VLProcessor)
    assert cls.__name__ == "Qwen2VLProcessor" and issubclass(cls, Qwen2VLProcessor)
    assert "video_processor" not in cls.get_attributes()
    assert processor_class_for(LlavaProcessor) is LlavaProcessor
