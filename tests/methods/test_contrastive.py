"""The joint contrastive objective: EOS embeddings from the LLM, prompts, cached text embeddings,
gradients, MoCa on the image branch, and the bad inputs."""

from __future__ import annotations

import pytest
import torch
from modalign_lab.towers.llava import load_llava

from modalign.errors import DataError
from modalign.methods.contrastive.objective import JointContrastiveObjective
from modalign.methods.moca import attach_moca
from modalign.methods.objectives import ForwardContext

CAPTIONS = ["a red circle", "two blue squares at the top", "a green star", "the glyph 7"]


@pytest.fixture
def setup(tiny_llava):
    model, proc = load_llava(tiny_llava)
    for p in model.parameters():
        p.requires_grad_(False)
    connector = model.model.multi_modal_projector
    for p in connector.parameters():
        p.requires_grad_(True)
    torch.manual_seed(0)
    tokens = connector(torch.randn(4, 16, 16))  # (B, M, D) image tokens
    return model, proc, tokens


def _ctx(model, tokens, captions=CAPTIONS):
    mask = torch.ones(tokens.shape[:2], dtype=torch.bool)
    return ForwardContext(model, {}, None, tokens, mask, {"captions": captions})


def _last_hidden(model, embeds):
    return model.get_decoder()(inputs_embeds=embeds[None]).last_hidden_state[0, -1]


def test_embeddings_are_the_final_hidden_state_at_the_eos(setup):
    model, proc, tokens = setup
    tok = proc.tokenizer
    obj = JointContrastiveObjective()
    obj.setup(model, proc)
    embed = model.get_input_embeddings()
    with torch.no_grad():
        img = obj.image_embeddings(model, tokens)
        direct = _last_hidden(model, torch.cat([embed(torch.tensor([tok.bos_token_id])), tokens[1],
                                                embed(torch.tensor([tok.eos_token_id]))]))  # fmt: skip
        assert torch.allclose(img[1], direct, atol=1e-5)
        txt = obj.text_embeddings(model, CAPTIONS)
        ids = [
            tok.bos_token_id,
            *tok(CAPTIONS[2], add_special_tokens=False)["input_ids"],
            tok.eos_token_id,
        ]
        assert torch.allclose(txt[2], _last_hidden(model, embed(torch.tensor(ids))), atol=1e-5)
    prompted = JointContrastiveObjective(prompt=True)
    prompted.setup(model, proc)
    with torch.no_grad():
        ids = [tok.bos_token_id, *tok("This sentence:", add_special_tokens=False)["input_ids"],
               *tok(CAPTIONS[0], add_special_tokens=False)["input_ids"],
               *tok(" means:", add_special_tokens=False)["input_ids"], tok.eos_token_id]  # fmt: skip
        got = prompted.text_embeddings(model, CAPTIONS[:1])[0]
        assert torch.allclose(got, _last_hidden(model, embed(torch.tensor(ids))), atol=1e-5)
        assert not torch.allclose(got, txt[0], atol=1e-3)


def test_cached_and_fresh_text_embeddings_give_the_same_loss(setup):
    model, proc, tokens = setup
    torch.manual_seed(1)
    cached = JointContrastiveObjective()
    fresh = JointContrastiveObjective(cache_text=False)
    for obj in (cached, fresh):
        obj.setup(model, proc)
    a = cached(_ctx(model, tokens))["contrastive"]
    assert len(cached._text_cache) == 4
    b = fresh(_ctx(model, tokens))["contrastive"]
    c = cached(_ctx(model, tokens))["contrastive"]  # now read from the cache
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(a, c, atol=1e-6)


def test_gradients_reach_connector_and_temperature_and_nothing_frozen(setup):
    model, proc, tokens = setup
    obj = JointContrastiveObjective()
    obj.setup(model, proc)
    obj(_ctx(model, tokens))["contrastive"].backward()
    assert obj.logit_scale.grad is not None and obj.logit_scale.grad.item() != 0
    connector = model.model.multi_modal_projector
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in connector.parameters())
    assert all(
        p.grad is None for n, p in model.named_parameters() if "multi_modal_projector" not in n
    )


def test_text_embeddings_are_recomputed_when_the_llm_trains(setup):
    model, proc, tokens = setup
    obj = JointContrastiveObjective()
    obj.setup(model, proc)
    for p in model.get_decoder().parameters():
        p.requires_grad_(True)
    obj(_ctx(model, tokens))["contrastive"].backward()
    assert obj._text_cache == {}  # nothing cached while the LLM trains
    emb = model.get_input_embeddings().weight
    assert emb.grad is not None and emb.grad.abs().sum() > 0


def test_moca_calibrates_the_image_branch_only(tiny_data, tiny_towers):
    # Two decoder layers: the EOS reads the calibrated image tokens of layer 1 in layer 2.
    from modalign_lab.towers.llava import build_processor, llava_from_towers
    from modalign_lab.towers.train import load_tokenizer
    from transformers import CLIPModel, LlamaConfig, LlamaForCausalLM

    tok = load_tokenizer(tiny_data)
    clip = CLIPModel.from_pretrained(tiny_towers[0] / "model")
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=2,
                                      num_key_value_heads=2))  # fmt: skip
    model = llava_from_towers(clip, lm, tok, seed=0).eval()
    proc = build_processor(tok, 64, 16)
    tokens = model.model.multi_modal_projector(torch.randn(4, 16, 16)).detach()
    obj = JointContrastiveObjective()
    obj.setup(model, proc)
    with torch.no_grad():
        before_img, before_txt = (
            obj.image_embeddings(model, tokens),
            obj.text_embeddings(model, CAPTIONS),
        )
        moca = attach_moca(model)
        moca.shift.fill_(0.5)
        obj._text_cache.clear()
        after_img, after_txt = (
            obj.image_embeddings(model, tokens),
            obj.text_embeddings(model, CAPTIONS),
        )
    assert not torch.allclose(before_img, after_img, atol=1e-3)
    assert torch.allclose(before_txt, after_txt, atol=1e-6)


def test_bad_inputs(setup):
    model, proc, tokens = setup
    obj = JointContrastiveObjective()
    with pytest.raises(RuntimeError, match="setup"):
        obj(_ctx(model, tokens))
    obj.setup(model, proc)
    with pytest.raises(DataError, match="no negatives"):
        obj(_ctx(model, tokens[:1], CAPTIONS[:1]))
    with pytest.raises(DataError, match="captions"):
        obj(_ctx(model, tokens, CAPTIONS[:2]))
    no_image = ForwardContext(model, {}, None, tokens, torch.zeros(4, 16, dtype=torch.bool), {})
    with pytest.raises(DataError, match="needs image tokens"):
        obj(no_image)
