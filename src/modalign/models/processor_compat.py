"""Image-only processors for families whose transformers processor insists on a video processor.

In transformers 5.x the Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision, InternVL and SmolVLM processors
require a `video_processor` argument, and every video processor needs torchvision. MIR only
uses images, so when torchvision is missing we build the same processor class without its
video part: same tokenizer, image processor, chat template and token expansion. The subclass
keeps the parent's name so saved configs stay loadable by `AutoProcessor` where torchvision is
installed.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
from typing import Any

from transformers.processing_utils import ProcessorMixin


def torchvision_available() -> bool:
    """Whether torchvision (needed by every transformers video processor) can be imported."""
    return importlib.util.find_spec("torchvision") is not None


def needs_video_processor(processor_cls: type) -> bool:
    """Whether `processor_cls.__init__` takes a `video_processor` argument."""
    return "video_processor" in inspect.signature(processor_cls.__init__).parameters


@functools.cache
def image_only(processor_cls: type) -> type:
    """Subclass of `processor_cls` whose sub-processors are only the image processor and tokenizer."""

    def get_attributes(cls: type) -> list[str]:
        # ProcessorMixin zips its positional args with these names: the parent's third
        # positional argument (video_processor=None) is dropped instead of being type-checked
        # against BaseVideoProcessor, and save/load skip the video part.
        return [a for a in processor_cls.get_attributes() if a != "video_processor"]

    attrs: dict[str, Any] = {"get_attributes": classmethod(get_attributes)}
    if processor_cls.apply_chat_template is not ProcessorMixin.apply_chat_template:
        # SmolVLM's override only reads video defaults (num_frames, fps) from the video processor.
        attrs["apply_chat_template"] = ProcessorMixin.apply_chat_template
    sub = type(processor_cls.__name__, (processor_cls,), attrs)
    sub.__qualname__ = processor_cls.__qualname__
    sub.__module__ = processor_cls.__module__
    return sub


def processor_class_for(processor_cls: type) -> type:
    """The class to instantiate: the original, or its image-only variant when torchvision is absent."""
    if needs_video_processor(processor_cls) and not torchvision_available():
        return image_only(processor_cls)
    return processor_cls
