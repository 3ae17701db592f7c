"""modalign_llava: LLaVA with any connector; swap, forward, save/reload, Auto classes, CLI MIR."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image
from transformers import (
    AutoModel,
    AutoModelForImageTextToText,
    AutoProcessor,
    LlavaForConditionalGeneration,
)

from modalign.cli import main
from modalign.errors import ConfigError, ModelError
from modalign.methods.connectors import ConnectorSpec
from modalign.models import get_adapter
from modalign.models.loading import load_model, load_processor
from modalign.models.surgery.connector_llava import (
    MODEL_TYPE,
    ConnectorLlavaConfig,
    ConnectorLlavaForConditionalGeneration,
    ConnectorLlavaModel,
    ConnectorLlavaProcessor,
    connector_llava_config,
    connector_processor,
    register_auto_classes,
    swap_connector,
)
from tests.models.conftest import PASSAGES

QF = "qformer:num_queries=6,num_layers=2,hidden_size=16,num_heads=4,intermediate_size=32"
# spec -> image tokens for the tiny llava (16 x 16 image, patch 4: 4 x 4 grid, CLS dropped)
SPECS = {
    "linear": 16,
    "mlp2x_gelu": 16,
    "mlp4x_gelu": 16,
    "pool:grid=2": 4,
    "resampler:num_queries=5,num_layers=1,num_heads=2,head_dim=8": 5,
    QF: 6,
    QF + ",text_input=instruction": 6,
    "sa_perceiver:num_heads=2": 17,  # 2 x 2 tiles of 16 px: 16 image tokens + 1 global token
    "sa_perceiver:num_heads=2,grid_cols=3,scope=global,attention=silu_literal,kv=shared": 17,
    "tiled:grid_rows=1,grid_cols=2,projector=linear": 3 * 16,  # every view's tokens
}
PROMPT = "USER: <image>\nWhat is in the picture? ASSISTANT:"


@pytest.fixture(scope="module")
def llava(tiny_dir):
    """The tiny HF llava model (eval) and its processor."""
    torch.set_num_threads(1)
    path = tiny_dir("llava")
    return LlavaForConditionalGeneration.from_pretrained(
        path
    ).eval(), AutoProcessor.from_pretrained(path)


def _images(n: int = 2) -> list[Image.Image]:
    out = []
    for i in range(n):
        g = torch.Generator().manual_seed(i)
        arr = (torch.rand(18 + i, 22, 3, generator=g) * 255).to(torch.uint8).numpy()
        out.append(Image.fromarray(arr, "RGB"))
    return out


def _inputs(processor, n: int = 2) -> dict:
    return processor(images=_images(n), text=[PROMPT] * n, return_tensors="pt")


@pytest.mark.parametrize(("spec", "m"), SPECS.items())
def test_swap_gives_a_model_with_m_image_tokens(llava, spec, m):
    base, processor = llava
    model, proc = swap_connector(base, processor, spec, seed=0)
    assert isinstance(model, ConnectorLlavaForConditionalGeneration)
    assert isinstance(proc, ConnectorLlavaProcessor)
    assert model.config.model_type == MODEL_TYPE and model.config.image_seq_length == m
    assert model.config.vision_seq_length == 16 and proc.image_seq_length == m
    assert model.config.connector == ConnectorSpec.parse(spec).resolved().to_dict()
    # The big parts are reused, not copied; the checkpoint's feature settings are kept.
    assert model.model.vision_tower is base.model.vision_tower
    assert model.model.language_model is base.model.language_model
    assert model.lm_head is base.lm_head
    assert model.config.vision_feature_layer == base.config.vision_feature_layer == -2
    assert model.config.vision_feature_select_strategy == "default"
    assert not model.training
    inputs = _inputs(proc)
    assert (inputs["input_ids"] == model.config.image_token_id).sum(1).tolist() == [m, m]
    with torch.no_grad():
        out = model(**inputs)
    # transformers >= 5.2x: per-image features under image_outputs.pooler_output (a list);
    # earlier: image_hidden_states, one (I * M, D) tensor
    encoded = getattr(out, "image_outputs", None)
    features = encoded.pooler_output if encoded is not None else out.image_hidden_states
    if isinstance(features, (list, tuple)):
        assert [f.shape[0] for f in features] == [m, m]
        features = torch.cat(list(features))
    assert features.shape == (2 * m, base.config.text_config.hidden_size)
    assert torch.isfinite(out.logits).all()
    # Same seed -> same connector; another seed -> another one.
    again, _ = swap_connector(base, processor, spec, seed=0)
    other, _ = swap_connector(base, processor, spec, seed=1)
    s0 = model.model.multi_modal_projector.state_dict()
    s1 = again.model.multi_modal_projector.state_dict()
    s2 = other.model.multi_modal_projector.state_dict()
    assert all(torch.equal(s0[k], s1[k]) for k in s0)
    assert any(not torch.equal(s0[k], s2[k]) for k in s0)


@pytest.mark.parametrize("spec", list(SPECS))
def test_save_and_reload_give_identical_outputs(llava, spec, tmp_path):
    base, processor = llava
    model, proc = swap_connector(base, processor, spec, seed=3)
    model.save_pretrained(tmp_path, safe_serialization=True)
    proc.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == MODEL_TYPE
    inputs = _inputs(proc)
    with torch.no_grad():
        expected = model(**inputs).logits
    loaded = load_model(str(tmp_path), torch.device("cpu"), torch.float32)
    loaded_proc = load_processor(str(tmp_path))
    assert type(loaded) is ConnectorLlavaForConditionalGeneration
    assert type(loaded_proc) is ConnectorLlavaProcessor
    reloaded = _inputs(loaded_proc)
    assert torch.equal(reloaded["input_ids"], inputs["input_ids"])
    with torch.no_grad():
        assert torch.equal(loaded(**reloaded).logits, expected)
    register_auto_classes()
    register_auto_classes()  # idempotent
    auto = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    auto_proc = AutoProcessor.from_pretrained(tmp_path)
    assert type(auto_proc) is ConnectorLlavaProcessor
    with torch.no_grad():
        assert torch.equal(auto(**_inputs(auto_proc)).logits, expected)


def test_auto_model_gives_the_base_model(llava, tmp_path):
    model, _ = swap_connector(*llava, "pool:grid=2")
    model.save_pretrained(tmp_path)
    register_auto_classes()
    base = AutoModel.from_pretrained(tmp_path)
    assert type(base) is ConnectorLlavaModel


def test_loading_in_bfloat16(llava, tmp_path):
    model, proc = swap_connector(*llava, QF + ",text_input=instruction")
    model.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), torch.device("cpu"), torch.bfloat16)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    inputs = _inputs(load_processor(str(tmp_path)))
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    with torch.no_grad():
        assert torch.isfinite(loaded(**inputs).logits.float()).all()


def test_swap_follows_the_models_dtype(llava):
    base, processor = llava
    model, _ = swap_connector(base, processor, "mlp2x_gelu")
    half = model.to(torch.bfloat16)  # the shared tower and LM are now bf16
    swapped, proc = swap_connector(half, processor, "resampler:num_queries=3,num_layers=1")
    assert {p.dtype for p in swapped.model.multi_modal_projector.parameters()} == {torch.bfloat16}
    inputs = _inputs(proc)
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    with torch.no_grad():
        assert torch.isfinite(swapped(**inputs).logits.float()).all()
    base.float()  # the shared modules go back to float32 for the other tests


def test_instruction_qformer_reads_connector_input_ids(llava):
    base, processor = llava
    model, proc = swap_connector(base, processor, QF + ",text_input=instruction", seed=0)
    tok = proc.tokenizer
    a = tok(["what colour is it", "count them"], return_tensors="pt", padding=True)
    b = tok(["where is the circle", "count them"], return_tensors="pt", padding=True)
    inputs = _inputs(proc)
    with torch.no_grad():
        plain = model(**inputs).logits
        la = model(**inputs, connector_input_ids=a.input_ids,
                   connector_attention_mask=a.attention_mask).logits  # fmt: skip
        lb = model(**inputs, connector_input_ids=b.input_ids,
                   connector_attention_mask=b.attention_mask).logits  # fmt: skip
    assert not torch.allclose(la[0], lb[0])  # row 0's instruction changed
    assert not torch.allclose(la, plain)
    with pytest.raises(ModelError, match="one row per image"):
        model(**inputs, connector_input_ids=a.input_ids[:1])
    # Generation passes the connector's text through to the first forward.
    out = model.generate(**inputs, connector_input_ids=a.input_ids,
                         connector_attention_mask=a.attention_mask, max_new_tokens=2,
                         do_sample=False)  # fmt: skip
    assert out.shape[0] == 2 and out.shape[1] > inputs["input_ids"].shape[1]


def test_connectors_without_text_ignore_connector_input_ids(llava):
    model, proc = swap_connector(*llava, QF)
    inputs = _inputs(proc)
    ids = torch.tensor([[3, 4], [5, 6]])
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, model(**inputs, connector_input_ids=ids).logits)


def test_training_reaches_the_connector_only_where_unfrozen(llava):
    model, proc = swap_connector(*llava, "resampler:num_queries=4,num_layers=1", seed=0)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.model.multi_modal_projector.parameters():
        p.requires_grad_(True)
    inputs = _inputs(proc)
    out = model(**inputs, labels=inputs["input_ids"])
    out.loss.backward()
    grads = [p.grad for p in model.model.multi_modal_projector.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in model.model.language_model.parameters())
    model.model.multi_modal_projector.zero_grad(set_to_none=True)


def test_swap_refuses_other_families(tiny_dir):
    qwen_dir = tiny_dir("qwen2_vl")
    qwen = AutoModelForImageTextToText.from_pretrained(qwen_dir)
    with pytest.raises(ModelError, match=r"'qwen2_vl' model: its patch merger .* vision tower"):
        swap_connector(qwen, load_processor(str(qwen_dir)), "mlp2x_gelu")
    next_dir = tiny_dir("llava_next")
    nxt = AutoModelForImageTextToText.from_pretrained(next_dir)
    with pytest.raises(ModelError, match="'llava_next' model: any-resolution tiling"):
        swap_connector(nxt, load_processor(str(next_dir)), "mlp2x_gelu")


def test_connector_processor_expands_to_the_given_count(llava):
    _, processor = llava
    proc = connector_processor(processor, 7)
    assert proc.tokenizer is processor.tokenizer and proc.chat_template == processor.chat_template
    ids = _inputs(proc)["input_ids"]
    assert (ids == processor.tokenizer.convert_tokens_to_ids("<image>")).sum(1).tolist() == [7, 7]
    counts = proc._get_num_multimodal_tokens(image_sizes=[(30, 20), (8, 9)])
    assert counts["num_image_tokens"] == [7, 7]
    with pytest.raises(ModelError, match="expected a LlavaProcessor"):
        connector_processor(processor.tokenizer, 7)


def test_swap_refuses_a_processor_that_disagrees_with_the_model(llava):
    base, processor = llava
    with pytest.raises(ModelError, match="expected a LlavaProcessor"):
        swap_connector(base, processor.tokenizer, "linear")
    saved = processor.patch_size
    try:
        processor.patch_size = 2  # expands <image> to 64 tokens; the model makes 16
        with pytest.raises(ModelError, match="processor and model disagree"):
            swap_connector(base, processor, "linear")
    finally:
        processor.patch_size = saved


def test_config_derives_token_counts_and_validates(llava):
    base, _ = llava
    config = connector_llava_config(base.config, "pool:grid=3")
    assert (config.vision_seq_length, config.image_seq_length) == (16, 9)
    again = ConnectorLlavaConfig.from_dict(config.to_dict())
    assert again.connector == config.connector and again.image_seq_length == 9
    default = ConnectorLlavaConfig(**{k: v for k, v in config.to_dict().items()
                                      if k not in ("connector", "model_type")})  # fmt: skip
    assert default.connector["name"] == "mlp2x_gelu" and default.image_seq_length == 16
    full = base.config.to_dict()
    full["vision_feature_select_strategy"] = "full"  # CLS kept: 17 tokens, not a square grid
    for key in ("model_type", "architectures", "transformers_version"):
        full.pop(key, None)
    assert ConnectorLlavaConfig(**full, connector="linear").image_seq_length == 17
    with pytest.raises(ModelError, match="square patch grid, got 17"):
        ConnectorLlavaConfig(**full, connector="pool")
    with pytest.raises(ConfigError, match="unknown connector"):
        connector_llava_config(base.config, "perceiver")
    odd = dict(full, vision_config={"model_type": "pixtral", "hidden_size": 32})
    with pytest.raises(ConfigError, match="pass vision_seq_length"):
        ConnectorLlavaConfig(**odd)
    assert (
        ConnectorLlavaConfig(**odd, vision_seq_length=25, connector="pool").image_seq_length == 25
    )


def test_direct_construction_uses_the_connectors_own_init(llava):
    base, _ = llava
    config = connector_llava_config(base.config, QF)
    torch.manual_seed(0)
    model = ConnectorLlavaForConditionalGeneration(config)
    connector = model.model.multi_modal_projector
    bound = 1 / math.sqrt(connector.proj.in_features)  # torch's default Linear init range
    assert connector.proj.weight.abs().max() <= bound
    assert connector.proj.weight.std() > 0.1 * bound  # not HF's N(0, 0.02)
    with pytest.raises(ConfigError, match="image_seq_length"):
        ConnectorLlavaProcessor(image_processor=None, tokenizer=None)


def test_adapter_and_cli_score_every_connector(llava, tmp_path, capsys):
    base, processor = llava
    images = tmp_path / "images"
    images.mkdir()
    for i, img in enumerate(_images(5)):
        img.save(images / f"im{i}.png")
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(PASSAGES) + "\n")
    for i, spec in enumerate(SPECS):
        model, proc = swap_connector(base, processor, spec, seed=i)
        adapter = get_adapter(model, proc)
        assert adapter.family == "llava"
        out = tmp_path / f"m{i}"
        model.save_pretrained(out)
        proc.save_pretrained(out)
        result = tmp_path / f"r{i}.json"
        rc = main(["mir", "--model", str(out), "--images", str(images), "--texts", str(texts),
                   "--n", "4", "--quiet", "--json", str(result)])  # fmt: skip
        assert rc == 0, (spec, capsys.readouterr().err)
        mir = json.loads(result.read_text())["mir"]
        assert math.isfinite(mir), spec


def test_tiled_processor_sizes_the_canvas_and_swapping_back_restores_one_tile(llava):
    base, processor = llava
    tile = processor.image_processor.crop_size["height"]
    tiled, proc = swap_connector(base, processor, "sa_perceiver:num_heads=2,grid_cols=3", seed=0)
    assert proc.view_grid == [2, 3]
    assert proc.image_processor.crop_size == {"height": 2 * tile, "width": 3 * tile}
    assert processor.image_processor.crop_size["height"] == tile  # the original is not changed
    pixels = proc(images=_images(1), text=[PROMPT], return_tensors="pt")["pixel_values"]
    assert pixels.shape[-2:] == (2 * tile, 3 * tile)
    back, proc2 = swap_connector(tiled, proc, "mlp2x_gelu", seed=0)
    assert proc2.view_grid is None
    assert proc2.image_processor.crop_size == {"height": tile, "width": tile}
    assert proc2.image_processor.size == processor.image_processor.size  # shortest edge again
    with torch.no_grad():
        assert torch.isfinite(back(**_inputs(proc2)).logits).all()
    with pytest.raises(ModelError, match="pixel canvases"):
        tiled(**_inputs(proc2))  # one-tile pixels into the tiled model
