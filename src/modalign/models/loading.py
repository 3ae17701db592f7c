"""Load an HF vision-language model and its processor from a local path or a hub id."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import torch

from modalign.errors import ConfigError, ModelError
from modalign.models.processor_compat import processor_class_for

# The one dtype vocabulary (CLI --dtype flags, assemble, training): names -> torch dtypes.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float64": torch.float64, "fp64": torch.float64, "double": torch.float64,
}  # fmt: skip


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A floating torch dtype from its name (float32, fp16, bf16, ...); anything else is refused."""
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ConfigError(f"dtype must be a floating-point type, got {dtype}")
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; use auto or one of {', '.join(DTYPES)}")
    return DTYPES[name]


def resolve_device_dtype(
    device: str | torch.device | None, dtype: str | torch.dtype | None
) -> tuple[torch.device, torch.dtype]:
    """`auto`/None -> CUDA bf16 when available, else CPU float32; names as in `parse_dtype`."""
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dtype is None or dtype == "auto":
        return dev, torch.bfloat16 if dev.type == "cuda" else torch.float32
    return dev, parse_dtype(dtype)


# Every Auto*/from_pretrained call of modalign passes these: code shipped inside a model folder
# (`auto_map`) is never run, and transformers never asks on stdin whether to run it.
NO_REMOTE_CODE: dict[str, Any] = {"trust_remote_code": False}


def read_config_json(path_or_id: str) -> Any:
    """The parsed config.json of a checkpoint (local or hub), or None where there is none; a file
    that is not JSON is a ModelError."""
    from transformers.utils import cached_file

    try:
        file = cached_file(path_or_id, "config.json", _raise_exceptions_for_missing_entries=False)
    except OSError:
        return None  # no config here: from_pretrained gives its own error
    if not file or not Path(file).is_file():
        return None
    try:
        return json.loads(Path(file).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path_or_id}: config.json is not valid JSON ({exc})") from exc


def refuse_remote_code(path_or_id: str) -> None:
    """ModelError when a checkpoint's config needs code shipped with it (an `auto_map` for a
    `model_type` transformers and modalign do not know): one line instead of a prompt."""
    from transformers import CONFIG_MAPPING

    from modalign.models.surgery.connector_llava import register_auto_classes

    register_auto_classes()  # modalign's own model types are known, not remote code
    config = read_config_json(path_or_id)
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if isinstance(config, dict) and config.get("auto_map") and model_type not in CONFIG_MAPPING:
        raise ModelError(
            f"{path_or_id}: model_type {model_type!r} needs the modeling code shipped in the "
            "folder (auto_map); modalign never runs code from a model folder. Use a checkpoint "
            "of a family transformers knows"
        )


def _processor_class_name(path_or_id: str) -> str | None:
    """The `processor_class` recorded in a checkpoint's processor/tokenizer configs, if any."""
    from transformers.utils import cached_file

    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        try:
            file = cached_file(path_or_id, name, _raise_exceptions_for_missing_entries=False)
        except OSError:
            file = None
        if file and Path(file).is_file():
            cls_name = json.loads(Path(file).read_text()).get("processor_class")
            if cls_name:
                return cls_name
    return None


def load_processor(path_or_id: str) -> Any:
    """AutoProcessor, or the same processor class without its video part when torchvision is absent."""
    import transformers

    from modalign.models.surgery.connector_llava import processor_class_named, register_auto_classes

    register_auto_classes()
    refuse_remote_code(path_or_id)
    cls_name = _processor_class_name(path_or_id)
    cls = (
        (getattr(transformers, cls_name, None) or processor_class_named(cls_name))
        if cls_name
        else None
    )
    if cls is not None:
        chosen = processor_class_for(cls)
        if chosen is not cls:  # image-only variant: the (required) video argument is None
            processor = chosen.from_pretrained(path_or_id, video_processor=None, **NO_REMOTE_CODE)
        else:
            processor = cls.from_pretrained(path_or_id, **NO_REMOTE_CODE)
    else:
        processor = transformers.AutoProcessor.from_pretrained(path_or_id, **NO_REMOTE_CODE)
    from modalign.models.export.restore import restore_processor

    config = read_config_json(path_or_id)
    return restore_processor(processor, config) if isinstance(config, dict) else processor


def _dtype_kwarg() -> str:
    """Name of from_pretrained's dtype argument in the installed transformers."""
    import transformers
    from packaging.version import Version

    return "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


def load_model(
    path_or_id: str,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> Any:
    """AutoModelForImageTextToText in eval mode on `device` with weights in `dtype` (names as
    "cpu", "cuda:1", "bfloat16" are accepted; None/"auto": CUDA bf16, else CPU float32). Every
    form modalign writes loads as the model that was saved: custom-code folders with modalign's
    own classes (the code in the folder is not run), a folder written in another form than the
    model's own as the model that was saved (`modalign.models.export.restore`)."""
    from transformers import AutoModelForImageTextToText

    device, dtype = resolve_device_dtype(device, dtype)
    refuse_remote_code(path_or_id)
    # transformers renamed torch_dtype to dtype in 4.56; keep older 4.x working.
    kwargs: dict[str, Any] = {_dtype_kwarg(): dtype, **NO_REMOTE_CODE}
    if device.type == "cuda" and importlib.util.find_spec("accelerate") is not None:
        kwargs["device_map"] = {"": device}  # load weights straight onto the GPU
    # Extensions recorded in the checkpoint (MoCa, kept LoRA) are re-attached with their tensors.
    # A folder written in another form than the model's own comes back as the model saved.
    from modalign.models.export.restore import restore_model
    from modalign.models.surgery.extensions import load_pretrained

    model = load_pretrained(
        AutoModelForImageTextToText, path_or_id, convert=restore_model, **kwargs
    )
    return model.to(device).eval()
