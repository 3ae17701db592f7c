"""Bad inputs fail with a clear ValueError that names the problem, never a silent number."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from modalign.data import Pair
from modalign.errors import ModelError
from modalign.measure.run import RunOptions, run_mir
from modalign.models import get_adapter, load_adapter
from modalign.models.adapters.registry import adapter_class_for
from modalign.testing.tiny_vlms import build_tiny
from tests.models.conftest import make_pairs


@pytest.mark.parametrize("template", ["chat", "plain", "official"])
@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "paligemma"])
def test_passage_with_zero_tokens(family, template, tiny_adapter):
    adapter = tiny_adapter(family)
    good = make_pairs(1)[0]
    # the tiny tokenizers' normalizer deletes control characters, as real ones drop odd input
    empty = Pair(good.image, "x.png", "\x01\x02", 7)
    with pytest.raises(ValueError, match=r"text passage 7 tokenizes to zero tokens"):
        adapter.prepare([good, empty], template=template)


def test_image_token_count_mismatch(tiny_dir):
    adapter = load_adapter(str(tiny_dir("llava")), device="cpu")
    adapter.processor.patch_size = 8  # expands to 4 tokens; the tower still yields 16 features
    batch = adapter.prepare(make_pairs(2))
    assert batch.vision_mask.sum(dim=1).tolist() == [4, 4]
    with pytest.raises(ValueError, match="image token count mismatch"):
        adapter.forward(batch)


def test_cross_attention_model_is_refused(tmp_path):
    path = build_tiny("mllama", tmp_path / "mllama")
    with pytest.raises(ValueError, match="cross-attention"):
        load_adapter(str(path), device="cpu")


@pytest.mark.parametrize(
    ("model_type", "match"),
    [
        ("idefics", "cross-attention"),
        ("mllama", "no vision tokens"),
        ("bert", "defines no image token"),
    ],
)
def test_refusals_say_why(model_type, match):
    config = SimpleNamespace(model_type=model_type)
    with pytest.raises(ValueError, match=match):
        adapter_class_for(config)


def test_unsupported_model_with_image_token_names_supported_families():
    config = SimpleNamespace(model_type="mystery_vlm", image_token_id=5)
    with pytest.raises(ValueError, match=r"no MIR adapter for model_type 'mystery_vlm'.*llava"):
        adapter_class_for(config)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_activations_name_the_layer(tiny_dir, value):
    adapter = load_adapter(str(tiny_dir("llava")), device="cpu")
    layer = adapter.model.get_decoder().layers[1]  # output = hidden_states[2]
    with torch.no_grad():
        layer.mlp.down_proj.weight.fill_(value)
    with pytest.raises(ValueError, match=r"layer 2: NaN/inf activations .*float16"):
        run_mir(adapter, make_pairs(2), RunOptions(progress=False))


def test_missing_chat_template_suggests_plain(tiny_dir):
    adapter = load_adapter(str(tiny_dir("llava")), device="cpu")
    adapter.processor.chat_template = None
    with pytest.raises(ValueError, match="no chat template; use --template plain"):
        adapter.prepare(make_pairs(1), template="chat")
    assert adapter.prepare(make_pairs(1), template="plain").text_mask.any()


def test_get_adapter_needs_a_processor_with_tokenizer(tiny_adapter):
    model = tiny_adapter("llava").model
    with pytest.raises(ValueError, match="no tokenizer"):
        get_adapter(model, SimpleNamespace())


def test_empty_pairs_are_rejected(tiny_adapter):
    adapter = tiny_adapter("llava")
    with pytest.raises(ValueError, match="at least one pair"):
        adapter.prepare([])
    with pytest.raises(ValueError, match="no image/text pairs"):
        run_mir(adapter, [], RunOptions(progress=False))


def test_a_missing_local_model_folder_is_named(tmp_path):
    from modalign.errors import DataError

    for name in (str(tmp_path / "nope"), "./nope", "runs/x/model"):
        with pytest.raises(DataError, match="no model folder"):
            load_adapter(name)


def test_a_folder_that_needs_its_own_code_is_one_line(tiny_dir, tmp_path, capsys):
    """An `auto_map` for an unknown model_type: refused before transformers could ask on stdin
    whether to run the folder's code (it never runs it)."""
    import json
    import shutil

    from modalign.cli import main

    folder = tmp_path / "custom"
    shutil.copytree(tiny_dir("llava"), folder)
    config = json.loads((folder / "config.json").read_text())
    config.update({"model_type": "my_vlm", "auto_map": {"AutoConfig": "modeling.MyConfig"}})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling.py").write_text("raise SystemExit('this code must never run')\n")
    with pytest.raises(ModelError, match="never runs code from a model folder"):
        load_adapter(str(folder))
    images = tmp_path / "img"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(images / "a.png")
    (tmp_path / "t.txt").write_text("a passage\n")
    rc = main(["mir", "--model", str(folder), "--images", str(images), "--texts",
               str(tmp_path / "t.txt"), "--n", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "never runs code" in err and err.count("\n") == 1


def test_load_model_takes_device_and_dtype_names(tiny_dir):
    import torch

    from modalign.models import load_model

    model = load_model(str(tiny_dir("llava")), device="cpu", dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16


def test_a_passage_longer_than_the_context_is_cut_to_fit_and_counted(tiny_adapter):
    """One enormous passage (a 1 MB line) does not hang or run out of memory: it is cut where
    the sequence would outgrow the model's context, and counted as truncated."""
    adapter = tiny_adapter("llava")
    context = adapter.context_length()
    assert context is not None
    pairs = make_pairs(2)
    pairs[1] = Pair(pairs[1].image, "long.png", "word " * 200_000, 1)
    batch = adapter.prepare(pairs, template="chat")
    assert batch.truncated == [False, True]
    assert int(batch.inputs["attention_mask"][1].sum()) == context
    assert int(batch.text_mask[1].sum()) > 0
    result = run_mir(adapter, pairs, RunOptions(batch_size=1, progress=False))
    assert result.metadata["truncated_passages"] == 1
