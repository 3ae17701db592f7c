"""model_parts on the tiny model of every family: the components partition the parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoModelForImageTextToText

from modalign.errors import ModelError
from modalign.methods.lora import LoraSpec, inject_lora
from modalign.models.parts import COMPONENTS, PART_LAYOUTS, model_parts, parameter_components
from tests.models.conftest import FAMILIES


@pytest.fixture
def tiny_model(tiny_dir):
    """family -> the tiny model loaded with from_pretrained (fresh copy per call)."""

    def get(family: str) -> nn.Module:
        torch.set_num_threads(1)
        return AutoModelForImageTextToText.from_pretrained(str(tiny_dir(family)))

    return get


@pytest.mark.parametrize("family", FAMILIES)
def test_components_partition_the_parameters(tiny_model, family):
    model = tiny_model(family)
    parts = model_parts(model)
    comps = parameter_components(model, parts)
    named = dict(model.named_parameters())  # tied weights once
    assert set(comps) == set(named)
    assert set(comps.values()) <= set(COMPONENTS)
    by = {c: [n for n, v in comps.items() if v == c] for c in COMPONENTS}
    assert by["vision"] and by["connector"] and by["llm"]
    assert not by["other"] and not by["lora"] and not by["moca"]
    # Counted once each: the component sizes add up to the model's parameter count.
    total = sum(named[n].numel() for c in COMPONENTS for n in by[c])
    assert total == sum(p.numel() for p in model.parameters())

    # Modules and paths agree; the LLM is exactly embed_tokens + layers + norm + lm_head.
    cfg = model.config.get_text_config()
    assert isinstance(parts.decoder_layers, nn.ModuleList)
    assert len(parts.decoder_layers) == cfg.num_hidden_layers
    assert isinstance(parts.vision_layers, nn.ModuleList) and len(parts.vision_layers) == 2
    assert parts.embed_tokens is model.get_input_embeddings()
    assert parts.lm_head is model.get_output_embeddings()
    assert parts.decoder is model.get_decoder()
    for n in by["llm"]:
        assert parts.decoder_layer_of(n) is not None or any(
            parts.in_part(n, p) for p in ("embed_tokens", "final_norm", "lm_head")
        ), n
    connector_ids = {id(p) for p in parts.connector.parameters()}
    assert connector_ids <= {id(named[n]) for n in by["connector"]}
    # The vision component: the tower without the connector (Qwen-VL's merger sits inside it).
    tower = {id(p) for p in parts.vision_tower.parameters()}
    assert {id(named[n]) for n in by["vision"]} == tower - connector_ids
    for n in by["vision"]:
        idx = parts.vision_layer_of(n)
        assert idx is None or 0 <= idx < len(parts.vision_layers)


@pytest.mark.parametrize("family", ["paligemma", "gemma3", "internvl"])
def test_tied_lm_head_is_counted_once(tiny_model, family):
    model = tiny_model(family)
    parts = model_parts(model)
    assert parts.lm_head.weight is parts.embed_tokens.weight
    comps = parameter_components(model, parts)
    assert not any(n.startswith("lm_head.") for n in comps)


def test_qwen_merger_is_the_connector(tiny_model):
    model = tiny_model("qwen2_vl")
    parts = model_parts(model)
    assert parts.connector is model.model.visual.merger
    assert parts.paths["vision_post"] == ()
    assert parts.component_of("model.visual.merger.mlp.0.weight") == "connector"
    assert parts.component_of("model.visual.blocks.1.mlp.fc1.weight") == "vision"
    assert parts.vision_layer_of("model.visual.blocks.1.mlp.fc1.weight") == 1


def test_llava_next_image_newline_is_connector(tiny_model):
    parts = model_parts(tiny_model("llava_next"))
    assert parts.paths["connector_extra"] == ("model.image_newline",)
    assert parts.component_of("model.image_newline") == "connector"


def test_modalign_llava_uses_the_llava_layout(tiny_model, tiny_dir):
    from modalign.models.loading import load_processor
    from modalign.models.surgery.connector_llava import swap_connector

    assert PART_LAYOUTS["modalign_llava"] is PART_LAYOUTS["llava"]
    llava = tiny_model("llava")
    model, _ = swap_connector(llava, load_processor(str(tiny_dir("llava"))), "linear")
    assert model.config.model_type == "modalign_llava"
    parts = model_parts(model)
    comps = parameter_components(model, parts)
    assert parts.connector is model.model.multi_modal_projector
    connector = {n for n, c in comps.items() if c == "connector"}
    assert connector == {
        f"model.multi_modal_projector.{n}" for n, _ in parts.connector.named_parameters()
    }
    assert "other" not in comps.values()


def test_lora_and_moca_are_their_own_components(tiny_model):
    model = tiny_model("llava")
    inject_lora(model, LoraSpec(r=2, targets=("q_proj",)), "model.language_model")
    model.moca = nn.Module()
    model.moca.scale = nn.Parameter(torch.ones(2, 32))
    parts = model_parts(model)
    comps = parameter_components(model, parts)
    assert comps["model.language_model.layers.0.self_attn.q_proj.lora_A.default.weight"] == "lora"
    assert comps["model.language_model.layers.0.self_attn.q_proj.base_layer.weight"] == "llm"
    assert comps["model.vision_tower.encoder.layers.0.self_attn.q_proj.weight"] == "vision"
    assert comps["moca.scale"] == "moca" and parts.moca is model.moca
    assert (
        parts.host_component("model.language_model.layers.1.self_attn.q_proj.lora_B.default.weight")
        == "llm"
    )
    assert (
        parts.decoder_layer_of(
            "model.language_model.layers.1.self_attn.q_proj.lora_B.default.weight"
        )
        == 1
    )
    assert "other" not in comps.values()


def test_unknown_family_and_broken_layout(tiny_model):
    class Bare(nn.Module):
        config = type("Cfg", (), {"model_type": "bert"})()

    with pytest.raises(ModelError, match=r"cannot split model_type 'bert'.*supported: gemma3, "):
        model_parts(Bare())
    model = tiny_model("llava")
    del model.model.multi_modal_projector
    with pytest.raises(
        ModelError, match=r"llava model has no connector at 'model\.multi_modal_proj"
    ):
        model_parts(model)


def test_mllama_is_refused(tiny_dir):
    from transformers import MllamaForConditionalGeneration

    model = MllamaForConditionalGeneration.from_pretrained(str(tiny_dir("mllama")))
    with pytest.raises(ModelError, match="cannot split model_type 'mllama'"):
        model_parts(model)
