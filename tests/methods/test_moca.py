"""MoCa on tiny LLaVA / Qwen2-VL / Gemma3 models: identity at init, vision rows only, against a
hand-written float32 reference between layers, prefill only, gradient checkpointing, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from modalign.errors import ConfigError, ModelError
from modalign.methods.moca import MoCa, attach_moca, detach_moca, get_moca
from modalign.testing.tiny_vlms import build_tiny
from tests.models.conftest import make_pairs

FAMILIES = ["llava", "qwen2_vl", "gemma3"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """family -> (fresh model in eval mode, adapter, padded batch of 3 image/text samples)."""
    from transformers import AutoModelForImageTextToText

    from modalign.models import get_adapter
    from modalign.models.loading import load_processor

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("moca_tiny")
    built = {}

    def get(family: str, n: int = 3):
        if family not in built:
            built[family] = build_tiny(family, root / family)
        path = built[family]
        model = AutoModelForImageTextToText.from_pretrained(path).eval()
        adapter = get_adapter(model, load_processor(str(path)))
        batch = adapter.prepare(make_pairs(n))
        return model, adapter, batch

    return get


def _perturb(moca: MoCa, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        moca.scale.copy_(1 + 0.5 * torch.randn(moca.scale.shape, generator=g))
        moca.shift.copy_(0.5 * torch.randn(moca.shift.shape, generator=g))


def _reference(model: nn.Module, scale: torch.Tensor, shift: torch.Tensor, mask: torch.Tensor):
    """Independent reference: wrap each decoder layer's forward (no hooks) so that its output
    becomes where(mask, u_k * h + v_k in float32, h) when the sequence is longer than 1."""
    layers = model.get_decoder().layers
    for k, layer in enumerate(layers):
        inner = layer.forward

        def forward(*args, _inner=inner, _k=k, **kwargs):
            out = _inner(*args, **kwargs)
            h = out[0] if isinstance(out, tuple) else out
            if h.shape[1] > 1:
                cal = (h.float() * scale[_k].float() + shift[_k].float()).to(h.dtype)
                h = torch.where(mask.unsqueeze(-1), cal, h)
            return (h, *out[1:]) if isinstance(out, tuple) else h

        layer.forward = forward
    return model


def _run(model, inputs, **kw):
    with torch.no_grad():
        return model(**inputs, output_hidden_states=True, **kw)


@pytest.mark.parametrize("family", FAMILIES)
def test_identity_at_init_and_registered(family, tiny):
    model, adapter, batch = tiny(family)
    inputs = adapter.model_inputs(batch)
    plain = _run(model, inputs)
    moca = attach_moca(model)
    out = _run(model, inputs)
    assert torch.equal(out.logits, plain.logits)
    assert all(
        torch.equal(a, b) for a, b in zip(out.hidden_states, plain.hidden_states, strict=True)
    )
    k, d = len(model.get_decoder().layers), model.config.get_text_config().hidden_size
    assert model.moca is moca and get_moca(model) is moca
    state = model.state_dict()
    assert state["moca.scale"].shape == (k, d) and state["moca.scale"].dtype == torch.float32
    assert torch.equal(state["moca.scale"], torch.ones(k, d))
    assert torch.equal(state["moca.shift"], torch.zeros(k, d))
    assert moca.scale.requires_grad and moca.shift.requires_grad
    assert {id(p) for p in moca.parameters()} <= {id(p) for p in model.parameters()}
    assert model.config.modalign_extensions == {
        "moca": {"num_layers": k, "hidden_size": d, "std": 0.0, "seed": 0}
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_vision_rows_only_and_equal_to_reference(family, tiny):
    model, adapter, batch = tiny(family)
    inputs = adapter.model_inputs(batch)
    # Capture hooks installed before MoCa: hidden_states must still be post-MoCa.
    plain = _run(model, inputs)
    moca = attach_moca(model)
    _perturb(moca)
    out = _run(model, inputs)
    vision = batch.vision_mask  # (B, T)
    assert vision.any() and (~vision).any()
    h1, p1 = out.hidden_states[1], plain.hidden_states[1]
    assert torch.equal(h1[~vision], p1[~vision])  # first layer: non-vision rows bit-identical
    assert not torch.equal(h1[vision], p1[vision])
    assert not torch.equal(out.logits, plain.logits)

    scale, shift = moca.scale.detach().clone(), moca.shift.detach().clone()
    detach_moca(model)
    assert torch.equal(_run(model, inputs).logits, plain.logits)  # hooks really gone
    ref = _run(_reference(model, scale, shift, vision), inputs)
    assert torch.equal(out.logits, ref.logits)
    assert all(torch.equal(a, b) for a, b in zip(out.hidden_states, ref.hidden_states, strict=True))


def test_text_only_input_untouched_after_training(tiny):
    model, adapter, _ = tiny("llava")
    ids = adapter.tokenizer(["a red circle on the left of a blue square"], return_tensors="pt")
    plain = _run(model, dict(ids))
    _perturb(attach_moca(model))
    assert torch.equal(_run(model, dict(ids)).logits, plain.logits)


def test_padded_batch_mask_is_the_vision_mask(tiny):
    model, adapter, batch = tiny("llava")
    inputs = adapter.model_inputs(batch)
    assert (inputs["attention_mask"] == 0).any()  # rows of different lengths, padded
    moca = attach_moca(model)
    seen = []
    calibrate = moca.calibrate
    moca.calibrate = lambda k, h, m: seen.append(m.clone()) or calibrate(k, h, m)
    _run(model, inputs)
    assert len(seen) == 2 and all(torch.equal(m, batch.vision_mask) for m in seen)
    # A pad id equal to the image id (some tokenizers) is excluded through the attention mask.
    img = model.config.image_token_id
    ids = torch.tensor([[1, img, img, 5], [1, img, img, img]])
    attention = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    mask = moca._mask_from_call((), {"input_ids": ids, "attention_mask": attention})
    assert mask.tolist() == [[False, True, True, False], [False, True, True, False]]
    assert torch.equal(moca._mask_from_call((ids,), {}), ids == img)  # positional input_ids


def test_bf16_model_keeps_float32_parameters(tiny):
    model, adapter, batch = tiny("llava")
    moca = attach_moca(model)
    with torch.no_grad():
        moca.scale.fill_(1 + 2e-5)  # not representable in bf16
    model.to(torch.bfloat16)
    assert moca.scale.dtype == torch.float32 and torch.all(moca.scale == 1 + 2e-5)
    model.half()
    assert moca.scale.dtype == torch.float32
    model.to(torch.bfloat16)
    assert next(model.get_decoder().parameters()).dtype == torch.bfloat16
    inputs = adapter.model_inputs(batch)
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    _perturb(moca)
    out = _run(model, inputs)
    scale, shift = moca.scale.detach().clone(), moca.shift.detach().clone()
    detach_moca(model)
    ref = _run(_reference(model, scale, shift, batch.vision_mask), inputs)
    assert out.logits.dtype == torch.bfloat16 and torch.equal(out.logits, ref.logits)


def test_identity_in_bf16_and_float64(tiny):
    for dtype in (torch.bfloat16, torch.float64):
        model, adapter, batch = tiny("qwen2_vl")
        model.to(dtype)
        inputs = adapter.model_inputs(batch)
        inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
        plain = _run(model, inputs)
        attach_moca(model)
        assert torch.equal(_run(model, inputs).logits, plain.logits), dtype


def test_generate_prefill_only(tiny):
    model, adapter, batch = tiny("llava", n=1)
    inputs = adapter.model_inputs(batch)
    moca = attach_moca(model)
    _perturb(moca)
    calls = []
    calibrate = moca.calibrate
    moca.calibrate = lambda k, h, m: calls.append(h.shape[1]) or calibrate(k, h, m)
    with torch.no_grad():
        manual = model(**inputs, logits_to_keep=1).logits[:, -1]
        calls.clear()
        gen = model.generate(**inputs, max_new_tokens=3, do_sample=False, output_logits=True,
                             return_dict_in_generate=True)  # fmt: skip
    assert len(gen.logits) == 3
    assert torch.equal(gen.logits[0], manual)
    # 2 layers x 1 prefill; the 2 decode steps (length 1) never reach the calibration.
    assert calls == [inputs["input_ids"].shape[1]] * 2


def test_single_token_step_is_not_calibrated(tiny):
    """Even an image-token id is left alone in a length-1 step (the official guard)."""
    model, _, _ = tiny("llava")
    ids = torch.tensor([[model.config.image_token_id]])
    plain = _run(model, {"input_ids": ids})
    _perturb(attach_moca(model))
    assert torch.equal(_run(model, {"input_ids": ids}).logits, plain.logits)


def _moca_grads(model, inputs, checkpointing: str | None):
    """Gradients of u, v for the LM loss; and how many masks were asked for during backward."""
    model = copy.deepcopy(model).train()
    if checkpointing == "transformers":  # checkpoints layer.forward: MoCa's hooks stay outside
        model.activation_checkpointing_enable({"use_reentrant": False})
    elif checkpointing == "wrapper":  # re-runs the whole layer call, hooks included, in backward
        from torch.utils.checkpoint import checkpoint, set_checkpoint_early_stop

        class Checkpointed(nn.Module):
            def __init__(self, inner: nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, *args, **kwargs):
                with set_checkpoint_early_stop(False):  # the recompute reaches MoCa's hook
                    return checkpoint(self.inner, *args, use_reentrant=False, **kwargs)

        layers = model.get_decoder().layers
        for i in range(len(layers)):
            layers[i] = Checkpointed(layers[i])
    in_backward = []
    current = model.moca._current_mask
    model.moca._current_mask = lambda k: (
        in_backward.append(torch._C._current_graph_task_id() != -1) or current(k)
    )
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    model(**inputs, labels=labels, use_cache=False).loss.backward()
    return model.moca.scale.grad, model.moca.shift.grad, sum(in_backward)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_gradient_checkpointing_same_gradients(family, tiny):
    model, adapter, batch = tiny(family)
    inputs = adapter.model_inputs(batch)
    _perturb(attach_moca(model))
    scale, shift, _ = _moca_grads(model, inputs, None)
    assert scale.abs().sum() > 0 and shift.abs().sum() > 0
    for mode, recomputed in (("transformers", 0), ("wrapper", 2)):
        g_scale, g_shift, n_backward = _moca_grads(model, inputs, mode)
        assert n_backward == recomputed, mode  # the wrapper re-ran both layers' hooks
        assert torch.equal(g_scale, scale) and torch.equal(g_shift, shift), mode


def test_vision_rows_get_the_gradient(tiny):
    """d loss / d v_k is the sum of the upstream gradient over vision rows only."""
    model, adapter, batch = tiny("llava")
    inputs = adapter.model_inputs(batch)
    moca = attach_moca(model)
    taps = []
    hook = lambda mod, args, out: out.retain_grad() or taps.append(out)  # noqa: E731
    last = model.get_decoder().layers[-1]
    handle = last.register_forward_hook(hook)  # after MoCa's (which is prepended)
    out = model(**inputs)
    out.logits.sum().backward()
    handle.remove()
    expected = taps[0].grad[batch.vision_mask].sum(0)  # (d,)
    torch.testing.assert_close(moca.shift.grad[-1], expected)


def test_seeded_std_init_like_official():
    a = MoCa(3, 8, std=0.02, seed=5)
    b = MoCa(3, 8, std=0.02, seed=5)
    c = MoCa(3, 8, std=0.02, seed=6)
    assert torch.equal(a.scale, b.scale) and not torch.equal(a.scale, c.scale)
    g = torch.Generator().manual_seed(5)
    assert torch.equal(a.scale[0], torch.normal(1.0, 0.02, (8,), generator=g))
    assert torch.equal(a.shift[0], torch.normal(0.0, 0.02, (8,), generator=g))
    with pytest.raises(ConfigError):
        MoCa(3, 8, std=-1.0)
    with pytest.raises(ConfigError):
        MoCa(3, 8, std=float("nan"))


def test_attach_std_and_detach(tiny):
    model, _, _ = tiny("gemma3")
    moca = attach_moca(model, std=0.1, seed=2)
    assert torch.equal(moca.scale, MoCa(moca.num_layers, moca.hidden_size, std=0.1, seed=2).scale)
    with pytest.raises(ModelError, match="already attached"):
        attach_moca(model)
    assert detach_moca(model) is moca
    assert get_moca(model) is None and not hasattr(model.config, "modalign_extensions")
    assert "moca" not in dict(model.named_children())
    layers = [model, *model.get_decoder().layers]
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in layers)
    with pytest.raises(ModelError, match="no MoCa"):
        detach_moca(model)


def test_deepcopy_gets_its_own_moca(tiny):
    model, adapter, batch = tiny("llava")
    inputs = adapter.model_inputs(batch)
    plain = _run(model, inputs)
    attach_moca(model)
    twin = copy.deepcopy(model)
    assert twin.moca is not model.moca
    _perturb(twin.moca)
    assert torch.equal(_run(model, inputs).logits, plain.logits)
    assert not torch.equal(_run(twin, inputs).logits, plain.logits)


def test_mask_shape_mismatch_is_an_error(tiny):
    model, adapter, batch = tiny("llava")
    inputs = adapter.model_inputs(batch)
    moca = attach_moca(model)
    wrong = torch.zeros(3, 5, dtype=torch.bool)
    with moca.vision_mask(wrong), pytest.raises(ModelError, match="does not match the hidden"):
        _run(model, inputs)
    with pytest.raises(ModelError, match="does not match"):
        moca.calibrate(0, torch.zeros(2, 4, moca.hidden_size), torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ModelError, match="expected"):
        moca.calibrate(0, torch.zeros(2, 4, 7), torch.zeros(2, 4, dtype=torch.bool))
    assert moca._masks == []  # the failed calls left no state behind
    _run(model, inputs)  # and the model still works


def test_inputs_embeds_only_needs_an_explicit_mask(tiny):
    model, adapter, _ = tiny("llava")
    ids = adapter.tokenizer(["two green triangles and one yellow star"], return_tensors="pt")
    ids = ids["input_ids"]
    moca = attach_moca(model)
    _perturb(moca)
    embeds = model.get_input_embeddings()(ids).detach()
    with pytest.raises(ModelError, match="inputs_embeds"):
        _run(model, {"inputs_embeds": embeds})
    with moca.vision_mask(torch.zeros_like(ids, dtype=torch.bool)):
        out = _run(model, {"inputs_embeds": embeds})
    assert torch.equal(out.logits, _run(model, {"input_ids": ids}).logits)
    fake = torch.zeros_like(ids, dtype=torch.bool)
    fake[0, 1:3] = True  # pretend two positions are vision tokens
    with moca.vision_mask(fake):
        marked = _run(model, {"inputs_embeds": embeds})
    scale, shift = moca.scale.detach().clone(), moca.shift.detach().clone()
    detach_moca(model)
    ref = _run(_reference(model, scale, shift, fake), {"inputs_embeds": embeds})
    assert torch.equal(marked.logits, ref.logits)


def test_decoder_called_directly_is_an_error(tiny):
    model, _, _ = tiny("llava")
    attach_moca(model)
    embeds = torch.zeros(1, 4, model.config.get_text_config().hidden_size)
    with pytest.raises(ModelError, match="outside a call"), torch.no_grad():
        model.get_decoder()(inputs_embeds=embeds)


def test_model_without_image_token_is_refused():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, vocab_size=50)  # fmt: skip
    with pytest.raises(ModelError, match="image token"):
        attach_moca(LlamaForCausalLM(cfg))
