"""Extensions travel with checkpoints: MoCa through save_model / load_model (identical logits,
quiet), sharded files, strict tensor checks, a LoRA-like wrapping extension that renames base
keys, and `modalign mir --model` on a MoCa checkpoint."""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager

import pytest
import torch
from safetensors import safe_open
from torch import nn

from modalign.errors import ConfigError, ModelError
from modalign.methods.moca import attach_moca, detach_moca, get_moca
from modalign.models import get_adapter
from modalign.models.checkpoint import save_model
from modalign.models.loading import load_model, load_processor
from modalign.models.surgery.extensions import (
    EXTENSIONS,
    ModelExtension,
    attach_extensions,
    load_pretrained,
    sync_records,
)
from modalign.registry import Registry
from tests.models.conftest import PASSAGES, make_pairs

CPU = torch.device("cpu")


@contextmanager
def transformers_warnings():
    """Messages transformers logs at WARNING or above while the block runs."""
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Collect(level=logging.WARNING)
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)


def _load(path, dtype=torch.float32):
    return load_model(str(path), CPU, dtype), load_processor(str(path))


def _perturb(module: nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))


def _logits(model, processor, n: int = 2) -> torch.Tensor:
    adapter = get_adapter(model, processor)
    batch = adapter.prepare(make_pairs(n))
    with torch.no_grad():
        return model(**adapter.model_inputs(batch)).logits


def _moca_checkpoint(tiny_dir, family: str, out, std: float = 0.0):
    model, processor = _load(tiny_dir(family))
    _perturb(attach_moca(model, std=std, seed=4))
    save_model(model, processor, out)
    return model, processor


@pytest.mark.parametrize(("family", "std"), [("llava", 0.0), ("qwen2_vl", 0.0), ("gemma3", 0.02)])
def test_moca_round_trip_identical_and_quiet(family, std, tiny_dir, tmp_path):
    model, processor = _moca_checkpoint(tiny_dir, family, tmp_path / "ckpt", std)
    with safe_open(tmp_path / "ckpt" / "model.safetensors", framework="pt") as f:
        assert f.get_tensor("moca.scale").dtype == torch.float32
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["modalign_extensions"]["moca"]["num_layers"] == 2
    with transformers_warnings() as seen:
        loaded, loaded_proc = _load(tmp_path / "ckpt")
    assert seen == []
    assert get_moca(loaded) is not None and not loaded.training
    assert torch.equal(loaded.moca.scale, model.moca.scale)
    assert torch.equal(loaded.moca.shift, model.moca.shift)
    assert loaded.config.modalign_extensions == model.config.modalign_extensions
    assert sync_records(loaded) == {"moca": {"num_layers": 2, "hidden_size": 32, "std": std,
                                             "seed": 4}}  # fmt: skip
    assert torch.equal(_logits(loaded, loaded_proc), _logits(model, processor))


def test_bf16_load_keeps_exact_float32_moca(tiny_dir, tmp_path):
    model, _ = _moca_checkpoint(tiny_dir, "llava", tmp_path / "ckpt")
    loaded, _ = _load(tmp_path / "ckpt", torch.bfloat16)
    assert next(loaded.get_decoder().parameters()).dtype == torch.bfloat16
    assert loaded.moca.scale.dtype == torch.float32
    assert torch.equal(loaded.moca.scale, model.moca.scale)


def test_sharded_checkpoint(tiny_dir, tmp_path):
    model, processor = _load(tiny_dir("llava"))
    _perturb(attach_moca(model))
    model.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    processor.save_pretrained(tmp_path / "sharded")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert not (tmp_path / "sharded" / "model.safetensors").exists()
    with transformers_warnings() as seen:
        loaded, loaded_proc = _load(tmp_path / "sharded")
    assert seen == []
    assert torch.equal(_logits(loaded, loaded_proc), _logits(model, processor))


def test_other_load_problems_are_still_reported(tiny_dir, tmp_path):
    model, processor = _load(tiny_dir("llava"))
    model.stray = nn.Parameter(torch.zeros(3))  # not an extension: transformers' report stays
    save_model(model, processor, tmp_path / "ckpt")
    with transformers_warnings() as seen:
        _load(tmp_path / "ckpt")
    assert any("LOAD REPORT" in m and "stray" in m for m in seen)


def _edit_config(path, **changes):
    file = path / "config.json"
    config = json.loads(file.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    file.write_text(json.dumps(config))


def test_strict_extension_tensors(tiny_dir, tmp_path):
    _moca_checkpoint(tiny_dir, "llava", tmp_path / "moca")
    _edit_config(tmp_path / "moca", modalign_extensions=None)  # tensors without their record
    with pytest.raises(ModelError, match=r"do not use: moca\.s"):
        _load(tmp_path / "moca")

    model, processor = _load(tiny_dir("llava"))
    save_model(model, processor, tmp_path / "plain")
    record = {"num_layers": 2, "hidden_size": 32, "std": 0.0, "seed": 0}
    _edit_config(tmp_path / "plain", modalign_extensions={"moca": record})
    with pytest.raises(ModelError, match=r"missing from the checkpoint: moca\.s"):
        _load(tmp_path / "plain")

    _edit_config(tmp_path / "plain", modalign_extensions={"mystery": {}})
    with pytest.raises(ConfigError, match=r"unknown model extension 'mystery'.*moca"):
        _load(tmp_path / "plain")


def test_record_that_does_not_fit_the_model(tiny_dir, tmp_path):
    _moca_checkpoint(tiny_dir, "llava", tmp_path / "ckpt")
    record = {"num_layers": 3, "hidden_size": 32, "std": 0.0, "seed": 0}
    _edit_config(tmp_path / "ckpt", modalign_extensions={"moca": record})
    with pytest.raises(ModelError, match="saved for 3 layers x 32 dims"):
        _load(tmp_path / "ckpt")


def test_save_model_records_what_is_attached(tiny_dir, tmp_path):
    model, processor = _load(tiny_dir("llava"))
    moca = attach_moca(model)
    del model.config.modalign_extensions  # lost record: save_model writes it again
    assert sync_records(model) == {"moca": moca.settings()}
    out = save_model(model, processor, tmp_path / "a")
    assert json.loads((out / "config.json").read_text())["modalign_extensions"]["moca"]
    assert (out / "tokenizer_config.json").is_file() or (out / "tokenizer.json").is_file()
    with pytest.raises(ConfigError, match="not empty"):
        save_model(model, processor, out)
    detach_moca(model)
    save_model(model, processor, out, overwrite=True)
    assert "modalign_extensions" not in json.loads((out / "config.json").read_text())
    assert get_moca(_load(out)[0]) is None
    assert not list(tmp_path.glob(".a.*"))  # no temporary folders left behind
    bare = save_model(model, None, tmp_path / "bare")  # weights and config only
    assert (bare / "model.safetensors").is_file() and not (bare / "tokenizer.json").exists()


# --------------------------------------------------------------------------- the contract

TARGET = "model.language_model.layers.0.self_attn.q_proj"


class Wrapped(nn.Module):
    """A LoRA-like wrapper: the base layer moves to `base_layer` (renaming its weight key)."""

    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        self.base_layer = base
        self.delta = nn.Parameter(torch.zeros(base.out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + self.delta


class WrapExtension(ModelExtension):
    def state(self, model):
        wrapped = isinstance(model.get_submodule(TARGET), Wrapped)
        return {"target": TARGET} if wrapped else None

    def attach(self, model, settings):
        parent, _, child = settings["target"].rpartition(".")
        module = model.get_submodule(parent)
        setattr(module, child, Wrapped(getattr(module, child)))

    def owns(self, key):
        return ".base_layer." in key or key.endswith(".delta")

    def replaces(self, key, settings):
        return key.rsplit(".", 1)[0] == settings["target"]


@pytest.fixture
def registry():
    reg: Registry[ModelExtension] = Registry("model extension")
    reg.register("moca")(EXTENSIONS["moca"])
    reg.register("wrap")(WrapExtension())
    return reg


def test_extension_that_renames_base_keys(tiny_dir, tmp_path, registry):
    from transformers import AutoModelForImageTextToText

    model, processor = _load(tiny_dir("llava"))
    WrapExtension().attach(model, {"target": TARGET})
    _perturb(model.get_submodule(TARGET))  # base weight and delta both differ from the original
    _perturb(attach_moca(model), seed=2)
    assert sync_records(model, registry) == {
        "moca": model.moca.settings(),
        "wrap": {"target": TARGET},
    }
    model.save_pretrained(tmp_path / "ckpt")
    with safe_open(tmp_path / "ckpt" / "model.safetensors", framework="pt") as f:
        saved = set(f.keys())
    # transformers saved LLaVA's original layout: the loader must find the renamed keys
    assert "language_model.model.layers.0.self_attn.q_proj.base_layer.weight" in saved
    with transformers_warnings() as seen:
        loaded = load_pretrained(
            AutoModelForImageTextToText, tmp_path / "ckpt", extensions=registry
        )
    assert seen == []
    assert isinstance(loaded.get_submodule(TARGET), Wrapped)
    assert not loaded.get_submodule(TARGET).training  # returned in eval mode, new modules too
    assert torch.equal(_logits(loaded.eval(), processor), _logits(model, processor))

    # A modalign that does not know the recorded extension refuses the checkpoint.
    plain = Registry("model extension")
    plain.register("moca")(EXTENSIONS["moca"])
    with pytest.raises(ConfigError, match="unknown model extension 'wrap'"):
        load_pretrained(AutoModelForImageTextToText, tmp_path / "ckpt", extensions=plain)


def test_attach_extensions_on_a_plain_load(tiny_dir, tmp_path):
    """attach_extensions alone (e.g. after a plain from_pretrained) completes the model."""
    from transformers import AutoModelForImageTextToText

    model, processor = _moca_checkpoint(tiny_dir, "qwen2_vl", tmp_path / "ckpt")
    plain = AutoModelForImageTextToText.from_pretrained(tmp_path / "ckpt").eval()
    assert attach_extensions(plain, tmp_path / "ckpt") == ["moca"]
    assert torch.equal(_logits(plain, processor), _logits(model, processor))


# --------------------------------------------------------------------------- MIR through the CLI


def test_cli_mir_on_moca_checkpoint(tiny_dir, tmp_path, capsys):
    from modalign.cli import main
    from modalign.data import SampleSource
    from modalign.measure.run import RunOptions, run_mir

    images = tmp_path / "images"
    images.mkdir()
    for pair in make_pairs(4):
        pair.image.save(images / pair.image_id)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(PASSAGES) + "\n")

    model, processor = _moca_checkpoint(tiny_dir, "llava", tmp_path / "ckpt")
    out = tmp_path / "mir.json"
    rc = main(["mir", "--model", str(tmp_path / "ckpt"), "--images", str(images), "--texts",
               str(texts), "--n", "4", "--batch-size", "2", "--json", str(out)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    cli = json.loads(out.read_text())["mir"]

    pairs = SampleSource.from_args(images=images, texts=texts).sample(4, 0, lazy=True)
    opts = RunOptions(batch_size=2, progress=False)
    in_memory = run_mir(get_adapter(model, processor), pairs, opts).mir
    assert cli == pytest.approx(in_memory, rel=1e-12, abs=1e-12)
    detach_moca(model)
    without = run_mir(get_adapter(model, processor), pairs, opts).mir
    assert abs(without - in_memory) > 1e-3  # the calibration is part of the measured states
