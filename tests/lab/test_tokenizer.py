"""The lab tokenizer: special ids, <image>, chat template, lossless round trip."""

from __future__ import annotations

from modalign_lab.towers.tokenizer import BOS, EOS, IMAGE, PAD, SPECIAL_TOKENS, train_tokenizer
from transformers import AutoTokenizer


def _tok():
    return train_tokenizer(
        ["the red circle is at the top left.", "what colour is the star? blue."] * 5, vocab_size=256
    )


def test_special_tokens_have_fixed_ids():
    tok = _tok()
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(
        range(len(SPECIAL_TOKENS))
    )
    assert tok.eos_token_id != 2  # CLIP's legacy pooling flag
    assert (tok.pad_token, tok.bos_token, tok.eos_token, tok.image_token) == (PAD, BOS, EOS, IMAGE)


def test_encode_decode_round_trip_with_unseen_words():
    tok = _tok()
    text = "the red circle is at the top left. Zebra 42!"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_image_token_is_one_id_and_newlines_do_not_become_unk():
    tok = _tok()
    ids = tok(f"{IMAGE}{IMAGE}\nthe star")["input_ids"]
    assert ids[1:3] == [tok.image_token_id] * 2
    assert tok.unk_token_id not in ids


def test_chat_template_and_save_load(tmp_path):
    tok = _tok()
    msgs = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": "what colour is the star?"}],
        },
        {"role": "assistant", "content": "blue"},
    ]
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert text == f"USER: {IMAGE}\nwhat colour is the star?\nASSISTANT: blue{EOS}\n"
    prompt = tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("ASSISTANT:") and text.startswith(prompt)
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert again.image_token_id == tok.image_token_id
