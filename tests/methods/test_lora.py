"""LoRA helpers on plain modules: target selection, in-place injection, merge against a float64
reference W + (alpha / r) B A, and re-creation from the recorded state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modalign.errors import ConfigError, ModelError
from modalign.methods.lora import (
    LoraSpec,
    attach_lora,
    has_lora,
    inject_lora,
    is_lora_param,
    lora_layers,
    lora_state,
    lora_target_names,
    merge_lora,
)


class Block(nn.Module):
    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.q_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d)
        self.proj = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(torch.tanh(self.q_proj(x)) + self.v_proj(x)))


class Toy(nn.Module):
    """A 'vision' part and a 'decoder' part with look-alike layer names."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.vision = Block()
        self.decoder = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.vision(x)
        for block in self.decoder:
            x = x + block(x)
        return self.head(x)


X = torch.randn(5, 8, generator=torch.Generator().manual_seed(3))


def test_spec_defaults_are_the_official_repo_and_validation():
    spec = LoraSpec()
    assert (spec.r, spec.alpha, spec.dropout, spec.targets, spec.merge) == (
        64,
        16.0,
        0.05,
        None,
        True,
    )
    assert LoraSpec.from_dict(LoraSpec(targets=("q_proj",)).to_dict()) == LoraSpec(
        targets=("q_proj",)
    )
    assert LoraSpec(targets="q_proj").targets == ("q_proj",)  # a bare string is one target
    for kwargs, message in [
        ({"r": 0}, "rank r must be a positive integer"),
        ({"r": 2.5}, "rank r must be a positive integer"),
        ({"alpha": -1}, "alpha must be > 0"),
        ({"alpha": float("inf")}, "alpha must be a finite number"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"targets": ()}, "non-empty list of module-name suffixes"),
        ({"targets": ("",)}, "non-empty list of module-name suffixes"),
    ]:
        with pytest.raises(ConfigError, match=message):
            LoraSpec(**kwargs)
    with pytest.raises(ConfigError, match="unknown LoRA option"):
        LoraSpec.from_dict({"rank": 4})


def test_targets_default_to_every_linear_in_scope_and_suffixes_match_at_dots():
    toy = Toy()
    everything = lora_target_names(toy, "decoder")
    assert everything == [f"decoder.{i}.{n}" for i in (0, 1) for n in ("q_proj", "v_proj", "proj")]
    # "proj" matches the layer called proj, not q_proj / v_proj; the vision block is out of scope.
    assert lora_target_names(toy, "decoder", ["proj"]) == ["decoder.0.proj", "decoder.1.proj"]
    assert lora_target_names(toy, "decoder", ["1.q_proj"]) == ["decoder.1.q_proj"]
    with pytest.raises(ConfigError, match=r"'head', 'k_proj' match no nn.Linear under 'decoder'"):
        lora_target_names(toy, "decoder", ["head", "q_proj", "k_proj"])
    with pytest.raises(ModelError, match="no submodule 'decoderx'"):
        lora_target_names(toy, "decoderx")


def test_inject_is_in_place_identity_at_init_and_keeps_requires_grad():
    toy = Toy()
    toy.vision.requires_grad_(False)
    ref = toy(X)
    names = inject_lora(
        toy, LoraSpec(r=2, alpha=4, dropout=0.0, targets=("q_proj", "v_proj")), "decoder"
    )
    assert type(toy) is Toy  # not wrapped in a PeftModel
    assert sorted(lora_layers(toy)) == sorted(names) == [
        "decoder.0.q_proj", "decoder.0.v_proj", "decoder.1.q_proj", "decoder.1.v_proj"
    ]  # fmt: skip
    torch.testing.assert_close(toy(X), ref, rtol=0, atol=0)  # B = 0 at init
    params = dict(toy.named_parameters())
    assert "decoder.0.q_proj.base_layer.weight" in params
    assert params["decoder.0.q_proj.base_layer.weight"].requires_grad  # peft would freeze it
    assert not params["vision.q_proj.weight"].requires_grad  # untouched
    assert params["decoder.0.q_proj.lora_A.default.weight"].requires_grad
    assert is_lora_param("decoder.0.q_proj.lora_B.default.weight")
    assert not is_lora_param("decoder.0.q_proj.base_layer.weight")
    with pytest.raises(ModelError, match="already has LoRA"):
        inject_lora(toy, LoraSpec(r=2), "decoder")
    # Selection is the same after injection (wrappers count as the linear they wrap).
    assert lora_target_names(toy, "decoder", ["q_proj", "v_proj"]) == names


def _randomise_b(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(7)
    for layer in lora_layers(model).values():
        w = layer.lora_B["default"].weight
        w.data = torch.randn(w.shape, generator=g)


def test_merge_matches_a_float64_reference_and_removes_the_layers():
    toy = Toy()
    spec = LoraSpec(r=2, alpha=6, dropout=0.0)
    inject_lora(toy, spec, "decoder")
    _randomise_b(toy)
    expected = {}
    for name, layer in lora_layers(toy).items():
        w = layer.get_base_layer().weight.detach().double()
        a = layer.lora_A["default"].weight.detach().double()  # (r, in)
        b = layer.lora_B["default"].weight.detach().double()  # (out, r)
        expected[name] = w + (spec.alpha / spec.r) * b @ a
    toy.eval()
    with torch.no_grad():
        unmerged = toy(X)
    merged = merge_lora(toy)
    assert merged == sorted(expected)
    assert not has_lora(toy) and lora_state(toy) is None
    assert not hasattr(toy, "peft_config")
    for name, w in expected.items():
        layer = toy.get_submodule(name)
        assert type(layer) is nn.Linear
        torch.testing.assert_close(layer.weight.detach().double(), w, rtol=1e-6, atol=1e-6)
    assert sorted(toy.state_dict()) == sorted(Toy().state_dict())
    with torch.no_grad():
        torch.testing.assert_close(toy(X), unmerged, rtol=1e-5, atol=1e-5)
    assert merge_lora(toy) == []  # nothing left to merge


def test_state_round_trip_rebuilds_identical_outputs():
    toy = Toy()
    inject_lora(toy, LoraSpec(r=2, alpha=4, dropout=0.1, targets=("v_proj",)), "decoder")
    _randomise_b(toy)
    state = lora_state(toy)
    assert state == {
        "r": 2,
        "alpha": 4.0,
        "dropout": 0.1,
        "targets": ["decoder.0.v_proj", "decoder.1.v_proj"],
    }
    fresh = Toy()
    assert attach_lora(fresh, state) == state["targets"]
    fresh.load_state_dict(toy.state_dict())  # the keys match exactly (strict)
    toy.eval()
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(X), toy(X), rtol=0, atol=0)


def test_attach_refuses_bad_states():
    with pytest.raises(ModelError, match=r"not found as nn\.Linear"):
        attach_lora(Toy(), {"r": 2, "alpha": 4, "dropout": 0.0, "targets": ["decoder.0.nope"]})
    with pytest.raises(ModelError, match="malformed LoRA state"):
        attach_lora(Toy(), {"r": 2, "targets": ["decoder.0.q_proj"]})
    with pytest.raises(ConfigError, match="rank r"):
        attach_lora(Toy(), {"r": 0, "alpha": 4, "dropout": 0.0, "targets": ["decoder.0.q_proj"]})


def test_half_precision_base_keeps_float32_adapters():
    toy = Toy().to(torch.bfloat16)
    inject_lora(toy, LoraSpec(r=2, alpha=4, dropout=0.0), "decoder")
    _randomise_b(toy)
    dtypes = {n: p.dtype for n, p in toy.named_parameters()}
    assert all(d == torch.float32 for n, d in dtypes.items() if is_lora_param(n))
    assert all(d == torch.bfloat16 for n, d in dtypes.items() if not is_lora_param(n))
    x = X.to(torch.bfloat16)
    assert toy(x).dtype == torch.bfloat16
    layer = toy.get_submodule("decoder.0.q_proj")
    w, a, b = (
        m.weight.detach().double()
        for m in (layer.get_base_layer(), layer.lora_A["default"], layer.lora_B["default"])
    )
    delta = 2.0 * b @ a  # (alpha / r) B A, float64
    expected = w + delta
    # The same adapters come back in float32 on a bf16 model rebuilt from the state.
    fresh = Toy().to(torch.bfloat16)
    attach_lora(fresh, lora_state(toy))
    fresh.load_state_dict(toy.state_dict())
    assert fresh.get_submodule("decoder.0.q_proj").lora_A["default"].weight.dtype == torch.float32
    torch.testing.assert_close(fresh(x), toy(x), rtol=0, atol=0)
    merge_lora(toy)
    merged = toy.get_submodule("decoder.0.q_proj").weight
    assert merged.dtype == torch.bfloat16
    # peft rounds the delta to bf16, then the sum: two roundings of at most 2^-8 relative each.
    err = (merged.detach().double() - expected).abs()
    assert bool((err <= 2**-8 * (expected.abs() + delta.abs()) * 1.01).all())
