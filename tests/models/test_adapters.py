"""Every supported family, built tiny and loaded back with from_pretrained: masks, states, MIR."""

from __future__ import annotations

import pytest
import torch

from modalign.measure.run import RunOptions, run_mir
from tests.models.conftest import FAMILIES, make_pairs

# Image tokens per image where the tiny processor's expansion does not depend on the image size.
FIXED_VISION_TOKENS = {
    "llava": 16,  # 16x16 crop, patch 4, CLS dropped
    "paligemma": 16,
    "gemma3": 4,  # mm_tokens_per_image
    "idefics3": 4,  # 16 patches, pixel shuffle 2x2
    "smolvlm": 4,
}


def _text_tokens(adapter, batch, i):
    return batch.inputs["input_ids"][i][batch.text_mask[i]].tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_vision_mask_is_exactly_the_expanded_image_tokens(family, tiny_adapter):
    adapter = tiny_adapter(family)
    pairs = make_pairs(4)
    batch = adapter.prepare(pairs, template="chat")
    ids, att = batch.inputs["input_ids"], batch.inputs["attention_mask"].bool()
    expected = (ids == adapter.model.config.image_token_id) & att
    assert torch.equal(batch.vision_mask, expected)
    counts = batch.vision_mask.sum(dim=1).tolist()
    assert all(c > 0 for c in counts)
    if family in FIXED_VISION_TOKENS:
        assert counts == [FIXED_VISION_TOKENS[family]] * len(pairs)
    if "image_grid_thw" in batch.inputs:  # Qwen: t*h*w patches merged 2x2
        grid = batch.inputs["image_grid_thw"]
        assert counts == (grid.prod(dim=1) // 4).tolist()
    # the model itself checks features == placeholder tokens: a forward pass must succeed
    adapter.forward(batch)
    assert not (batch.vision_mask & ~att).any()


@pytest.mark.parametrize("family", FAMILIES)
def test_text_mask_is_exactly_the_passage(family, tiny_adapter):
    adapter = tiny_adapter(family)
    tok = adapter.tokenizer
    pairs = make_pairs(8)
    plain = adapter.prepare(pairs, template="plain")
    chat = adapter.prepare(pairs, template="chat")
    for i, p in enumerate(pairs):
        own = tok(p.text, add_special_tokens=False)["input_ids"]
        # plain: exactly tokenizer(text, add_special_tokens=False), right after the image tokens
        assert _text_tokens(adapter, plain, i) == own
        keep = plain.inputs["attention_mask"][i].bool()
        row_text = plain.text_mask[i][keep]
        assert bool(row_text[-1]) or family == "paligemma"
        # chat: the passage's own tokens inside the rendered template (a leading space may merge)
        decoded = tok.decode(_text_tokens(adapter, chat, i))
        assert decoded in (p.text, " " + p.text), (family, decoded)
        assert not (chat.text_mask[i] & chat.vision_mask[i]).any()
        assert not (chat.text_mask[i] & ~chat.inputs["attention_mask"][i].bool()).any()


@pytest.mark.parametrize("family", FAMILIES)
def test_plain_is_bos_image_passage(family, tiny_adapter):
    adapter = tiny_adapter(family)
    tok = adapter.tokenizer
    pair = make_pairs(1)[0]
    batch = adapter.prepare([pair], template="plain")
    ids = batch.inputs["input_ids"][0].tolist()
    own = tok(pair.text, add_special_tokens=False)["input_ids"]
    assert ids[-len(own) :] == own
    head = ids[: -len(own)]
    bos = tok.bos_token_id
    adds_bos = bos is not None and tok("x")["input_ids"][0] == bos
    if adds_bos and family != "paligemma":
        assert head[0] == bos and head.count(bos) == 1
    # nothing but image framing between the image tokens and the passage
    first_image = head.index(adapter.image_token_id)
    assert all(t != adapter.image_token_id for t in head[:first_image])


@pytest.mark.parametrize("family", FAMILIES)
def test_hidden_states_match_direct_forward(family, tiny_adapter):
    adapter = tiny_adapter(family)
    batch = adapter.prepare(make_pairs(3), template="chat")
    states = adapter.forward(batch)
    assert states.layer_ids == [1, 2]
    with torch.inference_mode():
        direct = adapter.model(**batch.inputs, output_hidden_states=True)
    assert len(direct.hidden_states) == 3
    for k, h in zip(states.layer_ids, states.hidden, strict=True):
        torch.testing.assert_close(h, direct.hidden_states[k], rtol=0, atol=1e-6)
    only_two = adapter.forward(batch, layers=[2])
    torch.testing.assert_close(only_two.hidden[0], direct.hidden_states[2], rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_size_1_and_8_give_the_same_mir(family, tiny_adapter):
    adapter = tiny_adapter(family)
    pairs = make_pairs(8)
    one = run_mir(adapter, pairs, RunOptions(batch_size=1, progress=False))
    eight = run_mir(adapter, pairs, RunOptions(batch_size=8, progress=False))
    assert abs(one.mir - eight.mir) < 1e-6
    assert one.n_vision == eight.n_vision and one.n_text == eight.n_text
    assert all(
        abs(a - b) < 1e-6 * max(1.0, abs(a))
        for a, b in zip(one.per_layer, eight.per_layer, strict=True)
    )


def test_left_padding_gives_the_same_masks_and_mir(tiny_dir):
    from modalign.models import load_adapter

    right = load_adapter(str(tiny_dir("llava")), device="cpu")
    left = load_adapter(str(tiny_dir("llava")), device="cpu")
    left.tokenizer.padding_side = "left"
    pairs = make_pairs(6)
    rb, lb = right.prepare(pairs), left.prepare(pairs)
    assert not torch.equal(rb.text_mask, lb.text_mask)  # the padding really moved
    for i in range(len(pairs)):
        assert _text_tokens(right, rb, i) == _text_tokens(left, lb, i)
    a = run_mir(right, pairs, RunOptions(batch_size=6, progress=False))
    b = run_mir(left, pairs, RunOptions(batch_size=6, progress=False))
    assert abs(a.mir - b.mir) < 1e-5


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "paligemma"])
def test_official_text_is_everything_after_the_image(family, tiny_adapter):
    adapter = tiny_adapter(family)
    pairs = make_pairs(2)
    batch = adapter.prepare(pairs, template="official")
    for i, p in enumerate(pairs):
        keep = batch.inputs["attention_mask"][i].bool()
        vis, txt = batch.vision_mask[i][keep], batch.text_mask[i][keep]
        last = int(vis.nonzero().max())
        assert txt[last + 1 :].all() and not txt[: last + 1].any()
        text = adapter.tokenizer.decode(batch.inputs["input_ids"][i][keep][last + 1 :].tolist())
        assert "ASSISTANT: " + p.text in text


def test_max_text_tokens_truncates_and_records(tiny_adapter):
    adapter = tiny_adapter("llava")
    pairs = make_pairs(2)
    for template in ("chat", "plain", "official"):
        batch = adapter.prepare(pairs, template=template, max_text_tokens=3)
        assert batch.truncated == [True, True]
        if template != "official":
            assert batch.text_mask.sum(dim=1).tolist() == [3, 3]
    full = adapter.prepare(pairs, template="chat", max_text_tokens=1000)
    assert full.truncated == [False, False]
    with pytest.raises(ValueError, match="max_text_tokens"):
        adapter.prepare(pairs, max_text_tokens=0)


def test_describe_marks_vision_and_text_spans(tiny_adapter):
    adapter = tiny_adapter("llava")
    batch = adapter.prepare(make_pairs(2), template="chat")
    text = adapter.describe(batch, 0)
    assert "[VISION x16: <image>]" in text
    assert "[TEXT " in text and " TEXT]" in text
    assert "16 vision" in text and f"{int(batch.text_mask[0].sum())} text" in text


def test_unknown_template_and_layers_are_rejected(tiny_adapter):
    adapter = tiny_adapter("llava")
    with pytest.raises(ValueError, match="unknown template"):
        adapter.prepare(make_pairs(1), template="fancy")
    with pytest.raises(ValueError, match="out of range"):
        adapter.layer_ids([3])
    with pytest.raises(ValueError, match="duplicate"):
        adapter.layer_ids([1, 1])


@pytest.mark.parametrize(
    ("family", "passage"), [("qwen2_vl", "im_end"), ("llava", "ASSISTANT"), ("gemma3", "model")]
)
def test_passage_that_also_occurs_in_the_template_is_located(family, passage, tiny_adapter):
    adapter = tiny_adapter(family)
    pair = make_pairs(1)[0]
    pair = type(pair)(pair.image, "i.png", passage, 0)
    batch = adapter.prepare([pair], template="chat")
    text_ids = _text_tokens(adapter, batch, 0)
    assert adapter.tokenizer.decode(text_ids).strip() == passage
    # the passage is the assistant turn: only the template's end of turn follows it
    keep = batch.inputs["attention_mask"][0].bool()
    last = int(batch.text_mask[0][keep].nonzero().max())
    tail = adapter.tokenizer.decode(batch.inputs["input_ids"][0][keep][last + 1 :].tolist())
    marker = "QQQ"
    assert tail == adapter.render_chat(marker).split(marker)[1]


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "paligemma"])
def test_batched_states_equal_an_unbatched_processor_forward(family, tiny_adapter):
    """Per sample, via transformers' own apply_chat_template(tokenize=True): same ids, states."""
    adapter = tiny_adapter(family)
    pairs = make_pairs(3)
    batch = adapter.prepare(pairs, template="chat")
    states = adapter.forward(batch)
    for i, p in enumerate(pairs):
        messages = [
            {"role": "user", "content": [{"type": "image", "image": p.image}]},
            {"role": "assistant", "content": [{"type": "text", "text": p.text}]},
        ]
        enc = adapter.processor.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_tensors="pt"
        )
        keep = batch.inputs["attention_mask"][i].bool()
        assert enc["input_ids"][0].tolist() == batch.inputs["input_ids"][i][keep].tolist()
        with torch.inference_mode():
            ref = adapter.model(**enc, output_hidden_states=True).hidden_states
        for k, h in zip(states.layer_ids, states.hidden, strict=True):
            torch.testing.assert_close(h[i][keep], ref[k][0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("template", ["chat", "plain", "official"])
def test_qwen_gets_mm_token_type_ids_for_its_mrope(template, tiny_adapter):
    adapter = tiny_adapter("qwen2_5_vl")
    batch = adapter.prepare(make_pairs(3), template=template)
    types = batch.inputs["mm_token_type_ids"]
    assert types.shape == batch.inputs["input_ids"].shape
    assert torch.equal(types.bool(), batch.vision_mask)  # 1 exactly at image tokens


def test_gemma3_vision_is_the_soft_token_not_start_of_image(tiny_adapter):
    adapter = tiny_adapter("gemma3")
    batch = adapter.prepare(make_pairs(2))
    boi = adapter.tokenizer.convert_tokens_to_ids("<start_of_image>")
    ids = batch.inputs["input_ids"]
    assert (ids == boi).sum(dim=1).tolist() == [1, 1]
    assert not batch.vision_mask[ids == boi].any()
    assert adapter.image_token_id == adapter.tokenizer.convert_tokens_to_ids("<image_soft_token>")
