"""Model extensions: modifications that live inside a model (MoCa, an unmerged LoRA) and travel
with its checkpoint, so `load_model(path)` returns the model that was saved.

    EXTENSIONS["moca"]                              # a ModelExtension
    model = load_pretrained(AutoModelForImageTextToText, path, dtype=torch.bfloat16)
    attach_extensions(model, path)                  # what load_pretrained does after loading

The contract, for every extension registered here:
1. Record. While attached, the extension's settings (JSON-ready) are in
   `model.config.modalign_extensions[name]` (`modalign.methods.extension_record`); `state(model)`
   returns them from the live model (None when not attached). `save_model` refreshes the record
   from `state` before writing, so config.json always describes what is attached; attaching
   should also record, so that a plain `save_pretrained` (transformers.Trainer) is complete.
2. Tensors. Every tensor of the extension is in the model's `state_dict` (a registered submodule
   or wrapped layers), so `save_pretrained` writes it into model.safetensors (or its shards).
   `owns(key)` says which state-dict keys are the extension's, in the model's naming and in the
   checkpoint's (keys may be saved under transformers' original layout, e.g. LLaVA's
   `language_model.model.*`): MoCa owns `moca.*`; a kept LoRA owns `*.lora_A/B.*` and the
   `*.base_layer.*` weights its wrappers rename.
3. Loading, in this order:
   a. `from_pretrained` builds the plain model and loads every base weight it recognises.
      Checkpoint keys an extension owns come back as "unexpected" and are left to step c. Base
      keys an extension renamed (LoRA saves `q_proj.weight` as `q_proj.base_layer.weight`) come
      back as "missing" (freshly initialised); `replaces(key, settings)` must claim them.
      transformers' load report is held back when every such key is claimed, and shown as is
      otherwise. A checkpoint holding extension tensors that its config does not record is an
      error.
   b. `attach(model, settings)` rebuilds the modification on the loaded model, with the
      recorded settings and placeholder values (wrapping a layer carries its placeholder weight
      into `base_layer`). `load_pretrained` returns the model in eval mode, as from_pretrained
      does, new submodules (dropout) included.
   c. Every state-dict key the recorded extensions own is read from the safetensors files,
      strictly: a missing one, a shape mismatch, or an owned checkpoint key with no place in the
      model is a ModelError. This makes attaching after loading equivalent to attaching before:
      the renamed base weights are among the owned keys and arrive here.
   Why not rename base keys with from_pretrained's `key_mapping`: transformers keeps a used
   mapping in `model._weight_conversions` and reverses it at the next save.
Only safetensors checkpoints carry extensions; extension names unknown to this registry are a
ConfigError listing the known ones.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch

from modalign.errors import ModelError
from modalign.methods.extension_record import (
    forget_extension,
    record_extension,
    recorded_extensions,
)
from modalign.methods.lora import EXTENSION as LORA_EXTENSION
from modalign.methods.lora import attach_lora, is_lora_param, lora_state
from modalign.methods.moca import ATTR as MOCA_ATTR
from modalign.methods.moca import get_moca, rebuild_moca
from modalign.registry import Registry

__all__ = [
    "EXTENSIONS",
    "ModelExtension",
    "attach_extensions",
    "load_pretrained",
    "sync_records",
]


class ModelExtension:
    """One kind of model modification that saves with its checkpoint (see the module contract)."""

    def state(self, model: Any) -> dict[str, Any] | None:
        """JSON-ready settings of the modification attached to `model`, or None."""
        raise NotImplementedError

    def attach(self, model: Any, settings: Mapping[str, Any]) -> None:
        """Rebuild the modification on a freshly loaded `model` (tensors are loaded after)."""
        raise NotImplementedError

    def owns(self, key: str) -> bool:
        """Whether state-dict key `key` (model or checkpoint naming) holds this extension's tensor."""
        raise NotImplementedError

    def replaces(self, key: str, settings: Mapping[str, Any]) -> bool:
        """Whether base key `key`, missing from the checkpoint, is restored by owned tensors."""
        return False

    def save_files(self, model: Any, folder: Path) -> None:
        """Write any extra files the extension needs into the checkpoint folder (default none)."""


EXTENSIONS: Registry[ModelExtension] = Registry("model extension")


class MoCaExtension(ModelExtension):
    """MoCa (`modalign.methods.moca`): `model.moca.scale/shift`, hooks rebuilt on load."""

    def state(self, model: Any) -> dict[str, Any] | None:
        moca = get_moca(model)
        return None if moca is None else moca.settings()

    def attach(self, model: Any, settings: Mapping[str, Any]) -> None:
        rebuild_moca(model, settings)  # values: loaded from the checkpoint next

    def owns(self, key: str) -> bool:
        return key.split(".", 1)[0] == MOCA_ATTR


EXTENSIONS.register("moca")(MoCaExtension())


class LoraExtension(ModelExtension):
    """A kept (unmerged) LoRA (`modalign.methods.lora`): wrappers rebuilt on load; the adapters
    and the `base_layer` weights they renamed are the extension's tensors."""

    def state(self, model: Any) -> dict[str, Any] | None:
        return lora_state(model)

    def attach(self, model: Any, settings: Mapping[str, Any]) -> None:
        attach_lora(model, settings)

    def owns(self, key: str) -> bool:
        return is_lora_param(key) or "base_layer" in key.split(".")

    def replaces(self, key: str, settings: Mapping[str, Any]) -> bool:
        return key.rpartition(".")[0] in set(settings.get("targets", ()))


EXTENSIONS.register(LORA_EXTENSION)(LoraExtension())


def sync_records(model: Any, extensions: Registry[ModelExtension] = EXTENSIONS) -> dict[str, Any]:
    """Make `config.modalign_extensions` describe exactly what is attached; returns the record."""
    for name in recorded_extensions(model.config):
        extensions[name]  # an unknown recorded name is a ConfigError
    for name, ext in extensions.items():
        settings = ext.state(model)
        if settings is None:
            forget_extension(model, name)
        else:
            record_extension(model, name, settings)
    return recorded_extensions(model.config)


# --------------------------------------------------------------------------- checkpoint files


def _weight_files(path_or_id: str | os.PathLike[str]) -> dict[str, str] | None:
    """Checkpoint key -> local safetensors file (single or sharded); None without safetensors."""
    from transformers.utils import cached_file

    def fetch(name: str) -> str | None:
        try:
            return cached_file(str(path_or_id), name, _raise_exceptions_for_missing_entries=False)
        except OSError:
            return None

    from safetensors import safe_open

    single = fetch("model.safetensors")
    if single:
        with safe_open(single, framework="pt") as f:
            return dict.fromkeys(f.keys(), single)
    index = fetch("model.safetensors.index.json")
    if not index:
        return None
    weight_map = json.loads(Path(index).read_text())["weight_map"]
    files = {}
    for shard in sorted(set(weight_map.values())):
        local = fetch(shard)
        if not local:
            raise ModelError(f"{path_or_id}: shard {shard!r} listed in the index is missing")
        files[shard] = local
    return {key: files[shard] for key, shard in weight_map.items()}


def _saved_names(model: Any, key: str, tensor: torch.Tensor) -> list[str]:
    """Names `save_pretrained` may have used for model key `key` (transformers may revert keys to
    a model's original layout, e.g. LLaVA's `language_model.model.*`)."""
    names = [key]
    try:
        from transformers.core_model_loading import revert_weight_conversion

        reverted = list(revert_weight_conversion(model, {key: tensor.detach()}))
    except (ImportError, KeyError, ValueError, RuntimeError, TypeError):
        reverted = []
    if len(reverted) == 1 and reverted[0] != key:
        names.append(reverted[0])
    return names


def _owner(key: str, names: list[str], extensions: Registry[ModelExtension]) -> str | None:
    return next((n for n in names if extensions[n].owns(key)), None)


def _load_owned(
    model: Any,
    path_or_id: str | os.PathLike[str],
    names: list[str],
    files: dict[str, str],
    extensions: Registry[ModelExtension],
) -> None:
    """Copy every tensor the `names` extensions own from the checkpoint into `model`, strictly."""
    from safetensors import safe_open

    targets = {
        k: t
        for k, t in model.state_dict(keep_vars=True).items()
        if _owner(k, names, extensions) is not None
    }
    where: dict[str, str] = {}
    missing = []
    for key, tensor in targets.items():
        found = [n for n in _saved_names(model, key, tensor) if n in files]
        if not found:
            missing.append(key)
        else:
            where[key] = found[0]
    if missing:
        raise ModelError(
            f"{path_or_id}: extension tensor(s) missing from the checkpoint: "
            f"{', '.join(sorted(missing)[:8])}{' ...' if len(missing) > 8 else ''}"
        )
    used = set(where.values())
    every = list(extensions)
    extra = sorted(k for k in files if k not in used and _owner(k, every, extensions) is not None)
    if extra:
        raise ModelError(
            f"{path_or_id}: the checkpoint holds extension tensor(s) that the attached extensions "
            f"({', '.join(names) or 'none recorded in its config'}) do not use: "
            f"{', '.join(extra[:8])}{' ...' if len(extra) > 8 else ''}"
        )
    with ExitStack() as stack, torch.no_grad():
        handles: dict[str, Any] = {}
        for key, saved in where.items():
            file = files[saved]
            if file not in handles:
                handles[file] = stack.enter_context(safe_open(file, framework="pt"))
            value = handles[file].get_tensor(saved)
            target = targets[key]
            if value.shape != target.shape:
                raise ModelError(
                    f"{path_or_id}: extension tensor {saved!r} has shape {tuple(value.shape)}, "
                    f"the model expects {tuple(target.shape)}"
                )
            target.copy_(value)


def attach_extensions(
    model: Any,
    path_or_id: str | os.PathLike[str],
    extensions: Registry[ModelExtension] = EXTENSIONS,
) -> list[str]:
    """Re-attach every extension recorded in `model.config` and load its tensors from the
    checkpoint at `path_or_id` (steps b and c of the contract); returns the attached names."""
    records = recorded_extensions(model.config)
    for name in records:
        extensions[name]  # unknown names: ConfigError before anything changes
    files = _weight_files(path_or_id)
    if files is None:
        if records:
            raise ModelError(
                f"{path_or_id}: the config records model extensions ({', '.join(records)}) but "
                "there is no model.safetensors (or sharded index) to load them from"
            )
        return []
    for name, settings in records.items():
        extensions[name].attach(model, settings)
    _load_owned(model, path_or_id, list(records), files, extensions)
    return list(records)


# --------------------------------------------------------------------------- from_pretrained


class _HoldReports(logging.Filter):
    """Holds back transformers' LOAD REPORT warnings (to be re-emitted or dropped)."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if "LOAD REPORT" in record.getMessage():
            self.held.append(record)
            return False
        return True


@contextmanager
def _held_load_report() -> Iterator[_HoldReports]:
    logger = logging.getLogger("transformers.modeling_utils")
    hold = _HoldReports()
    logger.addFilter(hold)
    try:
        yield hold
    finally:
        logger.removeFilter(hold)


def _unexplained(
    info: Mapping[str, Any], records: Mapping[str, Any], extensions: Registry[ModelExtension]
) -> bool:
    """Whether the loading info reports anything the recorded extensions do not account for."""
    names = list(records)
    unexpected = [
        k for k in info.get("unexpected_keys", ()) if _owner(k, names, extensions) is None
    ]
    missing = [
        k
        for k in info.get("missing_keys", ())
        if not any(extensions[n].replaces(k, records[n]) for n in names)
    ]
    return bool(unexpected or missing or info.get("mismatched_keys") or info.get("error_msgs"))


def load_pretrained(
    auto_cls: Any,
    path_or_id: str | os.PathLike[str],
    *,
    extensions: Registry[ModelExtension] = EXTENSIONS,
    convert: Callable[[Any], Any] | None = None,
    **kwargs: Any,
) -> Any:
    """`auto_cls.from_pretrained(path_or_id, **kwargs)` with the checkpoint's extensions
    re-attached (contract steps a-c); transformers' load report is shown only for keys that no
    recorded extension accounts for. `convert`, if given, replaces the loaded model before the
    extensions attach (it must keep every state-dict key they own)."""
    with _held_load_report() as hold:
        model, info = auto_cls.from_pretrained(path_or_id, output_loading_info=True, **kwargs)
    if convert is not None:
        model = convert(model)
    records = recorded_extensions(model.config)
    for name in records:
        extensions[name]
    if _unexplained(info, records, extensions):
        for record in hold.held:
            logging.getLogger(record.name).handle(record)
    attach_extensions(model, path_or_id, extensions)
    return model.eval()  # like from_pretrained, now including the re-attached modules
