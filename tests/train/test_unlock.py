"""Unlock strategies: after one AdamW step exactly the unlocked parameters move; parameter groups
carry the per-component learning rates; bad strategies are clear ConfigErrors."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from transformers import LlavaConfig, LlavaForConditionalGeneration, Trainer

from modalign.errors import ConfigError
from modalign.methods.lora import LoraSpec, has_lora, lora_layers
from modalign.methods.moca import attach_moca
from modalign.models.parts import model_parts
from modalign.train.unlock import (
    Tune,
    UnlockSpec,
    apply_unlock,
    decay_exempt,
    finish_stage,
    param_groups,
)

TEXT_LAYERS, VISION_LAYERS, IMAGE_TOKEN, N_PATCHES = 4, 3, 63, 16
LORA = LoraSpec(r=4, alpha=8, dropout=0.0)


def tiny_llava(tie: bool = False, seed: int = 0) -> LlavaForConditionalGeneration:
    """A LLaVA small enough for a training step in milliseconds; the vision features are taken
    from the last layer (-1) so that every vision layer receives a gradient."""
    torch.manual_seed(seed)
    cfg = LlavaConfig(
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": VISION_LAYERS,
            "num_attention_heads": 2,
            "image_size": 16,
            "patch_size": 4,
        },
        text_config={
            "model_type": "llama",
            "vocab_size": 64,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": TEXT_LAYERS,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 64,
            "pad_token_id": 0,
            "tie_word_embeddings": tie,
        },
        image_token_index=IMAGE_TOKEN,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=tie,
    )
    return LlavaForConditionalGeneration(cfg)


def batch() -> dict[str, torch.Tensor]:
    """Two rows: BOS, 16 image tokens, 8 caption tokens (loss on the caption only)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.tensor([[1] + [IMAGE_TOKEN] * N_PATCHES + list(range(5, 13))] * 2)
    labels = ids.masked_fill(ids == IMAGE_TOKEN, -100)
    return {
        "input_ids": ids,
        "labels": labels,
        "pixel_values": torch.randn(2, 3, 16, 16, generator=g),
    }


def one_step(model: nn.Module, spec: UnlockSpec, lr: float = 1e-2):
    """apply_unlock, one AdamW step; returns (report, params before, params after)."""
    report = apply_unlock(model, spec)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(param_groups(model, None, default_lr=lr, weight_decay=0.0))
    model.train()
    model(**batch()).loss.backward()
    opt.step()
    after = dict(model.named_parameters())
    return report, before, after


def changed(before, after) -> set[str]:
    return {n for n in before if not torch.equal(before[n], after[n].detach())}


def trainable(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def frozen_untouched(before, after, model) -> None:
    """Every frozen parameter is bit-identical after the step."""
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(before[n], p.detach()), n


DEC = "model.language_model.layers."
VIS = "model.vision_tower.encoder.layers."


def layers_of(names: set[str], prefix: str) -> set[int]:
    return {int(n[len(prefix) :].split(".")[0]) for n in names if n.startswith(prefix)}


# --------------------------------------------------------------------------- spec parsing


def test_spec_normalises_and_round_trips():
    spec = UnlockSpec(llm=" First:16 ", vision="FROM:12", connector="full", moca=True)
    assert (spec.llm, spec.vision) == ("first:16", "from:12")
    assert spec.llm_tune == Tune("first", 16) and spec.vision_tune == Tune("from", 12)
    data = json.loads(json.dumps(spec.to_dict()))
    assert UnlockSpec.from_dict(data) == spec
    assert UnlockSpec() == UnlockSpec(llm="frozen", vision="frozen", connector="full")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"llm": "half"},
            "unknown llm tune type 'half'; choose one of: first:N, frozen, full, lora",
        ),
        ({"llm": "first"}, "needs an integer layer number"),
        ({"llm": "first:x"}, "needs an integer layer number"),
        ({"llm": "full:3"}, "takes no layer number"),
        ({"vision": "first:3"}, "unknown vision tune type"),
        ({"vision": "lora"}, "unknown vision tune type"),
        ({"connector": "from:1"}, "unknown connector tune type"),
        ({"moca": "yes"}, "moca must be true or false"),
        ({"llm": "full", "off_by_one_compat": True}, "only to llm=first:N"),
        ({"llm": "first:0"}, r"llm=first:0: N must be >= 1"),
        ({"vision": "from:-1"}, r"vision=from:-1: N must be >= 0"),
    ],
)
def test_bad_strategy_strings(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        UnlockSpec(**kwargs)


def test_from_dict_refuses_unknown_keys():
    with pytest.raises(ConfigError, match="unknown unlock option"):
        UnlockSpec.from_dict({"llm": "full", "tune_everything": True})


# --------------------------------------------------------------------------- one step


def test_connector_only():
    model = tiny_llava()
    report, before, after = one_step(model, UnlockSpec())
    assert trainable(model) == {n for n in before if n.startswith("model.multi_modal_projector.")}
    frozen_untouched(before, after, model)
    assert changed(before, after) == trainable(model)
    assert report.trainable["connector"] == report.total["connector"] > 0
    assert report.trainable["llm"] == report.trainable["vision"] == 0
    assert report.llm_layers == () and report.vision_layers == ()


def test_llm_full_unlocks_every_layer_and_the_ends():
    model = tiny_llava()
    report, before, after = one_step(model, UnlockSpec(llm="full", connector="frozen"))
    llm = {n for n in before if n.startswith(("model.language_model.", "lm_head."))}
    assert trainable(model) == llm
    frozen_untouched(before, after, model)
    moved = changed(before, after)
    assert moved == llm  # every decoder parameter got a gradient and moved
    assert report.llm_layers == tuple(range(TEXT_LAYERS)) and report.llm_layer_count == TEXT_LAYERS
    assert report.llm_parts == ("embed_tokens", "final_norm", "lm_head")
    assert report.trainable["llm"] == report.total["llm"]


@pytest.mark.parametrize(("compat", "expected"), [(False, {0, 1}), (True, {0, 1, 2})])
def test_llm_first_n_exact_layers(compat, expected):
    model = tiny_llava()
    spec = UnlockSpec(llm="first:2", connector="frozen", off_by_one_compat=compat)
    report, before, after = one_step(model, spec)
    frozen_untouched(before, after, model)
    moved = changed(before, after)
    assert layers_of(moved, DEC) == expected
    assert layers_of(trainable(model), DEC) == expected
    assert "model.language_model.embed_tokens.weight" in moved
    assert not {"model.language_model.norm.weight", "lm_head.weight"} & trainable(model)
    assert not {n for n in moved if not n.startswith(DEC)} - {
        "model.language_model.embed_tokens.weight"
    }
    assert report.llm_layers == tuple(sorted(expected))
    assert report.llm_parts == ("embed_tokens",)
    assert any("off_by_one_compat" in n for n in report.notes) == compat


def test_compat_with_n_equal_to_layer_count_unlocks_the_ends_like_the_official_code():
    model = tiny_llava()
    spec = UnlockSpec(llm=f"first:{TEXT_LAYERS}", off_by_one_compat=True)
    report = apply_unlock(model, spec)
    assert report.llm_layers == tuple(range(TEXT_LAYERS))
    assert report.llm_parts == ("embed_tokens", "final_norm", "lm_head")
    plain = apply_unlock(tiny_llava(), UnlockSpec(llm=f"first:{TEXT_LAYERS}"))
    assert plain.llm_layers == tuple(range(TEXT_LAYERS)) and plain.llm_parts == ("embed_tokens",)


def test_vision_from_n():
    model = tiny_llava()
    report, before, after = one_step(model, UnlockSpec(vision="from:1", connector="frozen"))
    frozen_untouched(before, after, model)
    moved, train = changed(before, after), trainable(model)
    post = {"model.vision_tower.post_layernorm.weight", "model.vision_tower.post_layernorm.bias"}
    assert train == {n for n in before if layers_of({n}, VIS) - {0}} | post
    assert layers_of(moved, VIS) == {1, 2}
    # LLaVA never applies post_layernorm to its features: unlocked (as the official code does)
    # but without a gradient, so AdamW leaves it as it was.
    assert moved == train - post
    assert report.vision_layers == (1, 2) and report.vision_layer_count == VISION_LAYERS
    assert report.vision_post


def test_out_of_range_layer_numbers_change_nothing():
    model = tiny_llava()
    apply_unlock(model, UnlockSpec(llm="full"))
    state = {n: p.requires_grad for n, p in model.named_parameters()}
    for spec, message in [
        (UnlockSpec(llm="first:5"), "the decoder has 4 layers; N must be between 1 and 4"),
        (UnlockSpec(llm="first:5", off_by_one_compat=True), "between 1 and 4"),
        (UnlockSpec(vision="from:3"), "the vision tower has 3 layers; N must be between 0 and 2"),
    ]:
        with pytest.raises(ConfigError, match=message):
            apply_unlock(model, spec)
        assert {n: p.requires_grad for n, p in model.named_parameters()} == state


def test_tied_lm_head_is_reported():
    model = tiny_llava(tie=True)
    report = apply_unlock(model, UnlockSpec(llm="first:1"))
    assert model.lm_head.weight.requires_grad  # one tensor with embed_tokens
    assert "lm_head" in report.llm_parts
    assert any("lm_head.weight is tied to" in n for n in report.notes)


def test_moca_needs_an_attached_module_and_follows_the_flag():
    model = tiny_llava()
    with pytest.raises(ConfigError, match=r"no MoCa attached \(model.moca\)"):
        apply_unlock(model, UnlockSpec(moca=True))
    attach_moca(model)
    assert trainable(model) >= {"moca.scale"}  # fresh parameters default to trainable
    apply_unlock(model, UnlockSpec())
    assert not trainable(model) & {"moca.scale", "moca.shift"}
    report = apply_unlock(model, UnlockSpec(moca=True, connector="frozen"))
    assert trainable(model) == {"moca.scale", "moca.shift"}
    assert report.trainable["moca"] == report.total["moca"] == 2 * TEXT_LAYERS * 16


def test_report_is_json_ready_and_summarises():
    report = apply_unlock(tiny_llava(), UnlockSpec(llm="first:2", vision="from:1"))
    data = json.loads(json.dumps(report.to_dict()))
    assert data["llm_layers"] == [0, 1] and data["llm_layer_count"] == TEXT_LAYERS
    text = report.summary()
    assert "decoder layers 0-1 (2 of 4) + embed_tokens" in text
    assert "encoder layers 1-2 (2 of 3) + post-layer modules" in text


# --------------------------------------------------------------------------- LoRA


def test_lora_trains_adapters_only_then_merges_to_the_same_outputs():
    model = tiny_llava()
    spec = UnlockSpec(llm="lora", connector="frozen", lora=LORA)
    report, before, after = one_step(model, spec)
    assert report.lora_injected
    assert len(report.lora_targets) == 7 * TEXT_LAYERS  # q k v o gate up down per layer
    assert all(t.startswith(DEC) for t in report.lora_targets)
    frozen_untouched(before, after, model)
    train = trainable(model)
    assert train and all(".lora_A." in n or ".lora_B." in n for n in train)
    assert report.trainable["lora"] == report.total["lora"] and report.trainable["llm"] == 0
    moved = changed(before, after)
    # B starts at 0, so A's first gradient is 0: the first step moves every B.
    assert {n for n in train if ".lora_B." in n} <= moved <= train
    assert all(torch.equal(before[n], after[n]) for n in before if ".base_layer." in n)

    model.eval()
    with torch.no_grad():
        kept = model(**batch()).logits
    merged = finish_stage(model, spec)
    assert merged == sorted(report.lora_targets)
    assert not has_lora(model)
    names = [n for n, _ in model.named_parameters()]
    assert not any("lora_" in n or "base_layer" in n for n in names)
    assert sorted(names) == sorted(n for n, _ in tiny_llava().named_parameters())
    with torch.no_grad():
        folded = model(**batch()).logits
    torch.testing.assert_close(folded, kept, rtol=1e-5, atol=1e-5)


def test_lora_kept_stays_and_follows_later_unlocks():
    model = tiny_llava()
    keep = UnlockSpec(llm="lora", lora=LoraSpec(r=4, alpha=8, dropout=0.0, merge=False))
    apply_unlock(model, keep)
    assert finish_stage(model, keep) == [] and has_lora(model)
    # Same spec again: the existing adapters are reused, not stacked.
    again = apply_unlock(model, keep)
    assert not again.lora_injected and len(again.lora_targets) == 7 * TEXT_LAYERS
    # A later stage unlocking the first two layers trains their adapters and base weights.
    apply_unlock(model, UnlockSpec(llm="first:2"))
    assert layers_of({n for n in trainable(model) if "lora_" in n}, DEC) == {0, 1}
    apply_unlock(model, UnlockSpec(llm="frozen"))
    assert not any("lora_" in n for n in trainable(model))


def test_lora_mismatch_with_existing_adapters():
    model = tiny_llava()
    apply_unlock(model, UnlockSpec(llm="lora", lora=LORA))
    with pytest.raises(ConfigError, match="already has LoRA adapters"):
        apply_unlock(model, UnlockSpec(llm="lora", lora=LoraSpec(r=8)))
    with pytest.raises(ConfigError, match="already has LoRA adapters"):
        apply_unlock(
            model, UnlockSpec(llm="lora", lora=LoraSpec(r=4, alpha=8, targets=("q_proj",)))
        )


def test_lora_explicit_targets_stay_in_the_decoder():
    model = tiny_llava()
    spec = UnlockSpec(llm="lora", lora=LoraSpec(r=4, alpha=8, targets=("q_proj", "v_proj")))
    report = apply_unlock(model, spec)
    assert len(report.lora_targets) == 2 * TEXT_LAYERS  # not the vision tower's q_proj/v_proj
    assert all(t.startswith(DEC) and t.endswith(("q_proj", "v_proj")) for t in report.lora_targets)


def test_lora_targets_matching_nothing():
    model = tiny_llava()
    # fc1 exists only in the vision tower: LoRA is scoped to the decoder.
    spec = UnlockSpec(llm="lora", lora=LoraSpec(targets=("nope", "fc1", "q_proj")))
    with pytest.raises(ConfigError, match=r"LoRA target\(s\) 'nope', 'fc1' match no nn.Linear"):
        apply_unlock(model, spec)
    assert not has_lora(model) and not lora_layers(model)


# --------------------------------------------------------------------------- parameter groups


def test_param_groups_rates_and_decay():
    model = tiny_llava()
    attach_moca(model)
    apply_unlock(model, UnlockSpec(llm="first:2", vision="full", moca=True))
    lrs = {"connector": 1e-3, "vision": 2e-6, "moca": 5e-3}
    opt = torch.optim.AdamW(param_groups(model, lrs, default_lr=2e-5, weight_decay=0.1))
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {
        "vision",
        "vision/no_decay",
        "connector",
        "connector/no_decay",
        "llm",
        "llm/no_decay",
        "moca/no_decay",
    }
    for name, g in groups.items():
        comp, _, tail = name.partition("/")
        assert g["lr"] == {**lrs, "llm": 2e-5}[comp]
        assert g["weight_decay"] == (0.0 if tail else 0.1)
    # Every trainable parameter in exactly one group; frozen ones in none.
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    # No decay on biases, norms and MoCa; HF Trainer's own rule is the reference.
    named = dict(model.named_parameters())
    no_decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    hf_decay = set(Trainer.get_decay_parameter_names(None, model))
    for n, p in named.items():
        if not p.requires_grad:
            continue
        expect_exempt = n not in hf_decay or n.startswith("moca.")
        assert (id(p) in no_decay) == expect_exempt, n
    assert id(named["model.language_model.layers.0.input_layernorm.weight"]) in no_decay
    assert id(named["model.multi_modal_projector.linear_1.bias"]) in no_decay
    assert id(named["model.multi_modal_projector.linear_1.weight"]) not in no_decay


def test_decay_exempt_catches_norm_classes_hf_names_miss():
    """A norm module whose name has no 'norm' in it (Qwen-VL's merger `ln_q`)."""
    model = tiny_llava()
    proj = model.model.multi_modal_projector
    proj.ln_q = nn.LayerNorm(16)
    assert "model.multi_modal_projector.ln_q.weight" in decay_exempt(model)


def test_param_groups_lora_group():
    model = tiny_llava()
    apply_unlock(model, UnlockSpec(llm="lora", lora=LORA))
    groups = param_groups(model, {"lora": 2e-4}, default_lr=1e-3, weight_decay=0.0)
    assert [(g["name"], g["lr"]) for g in groups] == [
        ("connector", 1e-3),
        ("connector/no_decay", 1e-3),
        ("lora", 2e-4),
    ]


@pytest.mark.parametrize(
    ("lrs", "kwargs", "message"),
    [
        ({"projector": 1e-3}, {}, "unknown component.*projector.*choose from: vision, connector"),
        ({"llm": -1.0}, {}, "learning rate of llm must be >= 0"),
        ({}, {"default_lr": float("nan")}, "must be a finite number"),
        ({"vision": True}, {}, "learning rate of vision must be a finite number"),
        ({}, {"weight_decay": -0.1}, "weight_decay must be >= 0"),
    ],
)
def test_param_groups_bad_input(lrs, kwargs, message):
    model = tiny_llava()
    apply_unlock(model, UnlockSpec())
    with pytest.raises(ConfigError, match=message):
        param_groups(model, lrs, **{"default_lr": 1e-3, **kwargs})


def test_param_groups_nothing_to_train():
    model = tiny_llava()
    apply_unlock(model, UnlockSpec(connector="frozen"))
    with pytest.raises(ConfigError, match="nothing to train"):
        param_groups(model, {}, default_lr=1e-3)


def test_parts_resolve_for_the_test_model():
    parts = model_parts(tiny_llava())
    assert len(parts.decoder_layers) == TEXT_LAYERS and len(parts.vision_layers) == VISION_LAYERS


@pytest.mark.parametrize("writer", ["save_model", "save_pretrained"])
def test_kept_lora_reloads_to_identical_outputs(tmp_path, writer):
    """A kept adapter travels with the checkpoint (modalign.models.surgery.extensions) and comes back
    identical, whether written by save_model or by a plain save_pretrained (Trainer)."""
    from modalign.methods.lora import lora_state
    from modalign.models.checkpoint import save_model
    from modalign.models.loading import load_model

    model = tiny_llava()
    spec = UnlockSpec(llm="lora", lora=LoraSpec(r=4, alpha=8, dropout=0.0, merge=False))
    one_step(model, spec)  # the adapters' B moves away from 0
    assert finish_stage(model, spec) == []
    model.eval()
    with torch.no_grad():
        ref = model(**batch()).logits
    out = tmp_path / "ckpt"
    if writer == "save_model":
        save_model(model, None, out)
    else:
        model.save_pretrained(out)
    loaded = load_model(str(out), torch.device("cpu"), torch.float32)
    assert has_lora(loaded) and lora_state(loaded) == lora_state(model)
    for name, p in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], p), name
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch()).logits, ref, rtol=0, atol=0)
    # Merging after the reload gives the same model as merging before saving.
    merged = finish_stage(loaded, UnlockSpec(llm="lora", lora=LORA))
    assert merged and "lora" not in getattr(loaded.config, "modalign_extensions", {})
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch()).logits, ref, rtol=1e-5, atol=1e-5)
