"""`--template official` renders the official MIR script's sequence token for token.

The reference below transcribes what `mir.py` of shikiw/Modality-Integration-Rate does: LLaVA's
`conv_templates["vicuna_v1"]` (SeparatorStyle.TWO, sep " ", sep2 "</s>") with the image turn
"<image>\\n" and the passage as the assistant turn, tokenized by `tokenizer_image_token` (each
chunk around "<image>" tokenized on its own with BOS, later chunks' BOS dropped, one image index
in between); the text tokens are everything after the image block. The tokenizer has the
LLaVA-1.5 layout: transformers' LlamaTokenizer (SentencePiece-style BPE with byte fallback, BOS
added), `<image>` and `<pad>` appended as added special tokens, as in llava-hf/llava-1.5-7b-hf.
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from modalign.data import Pair
from modalign.models import get_adapter

SYSTEM = (  # conv_vicuna_v1.system, written out independently of modalign's constant
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
IMAGE_INDEX = -200  # LLaVA's IMAGE_TOKEN_INDEX placeholder

PASSAGES = [
    "A red circle sits left of a blue square.",
    "Two green triangles near the top. hello world",
    "hello",
]


def _llava15_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizer

    corpus = [SYSTEM + " USER: ASSISTANT:", *PASSAGES] * 5
    bpe = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=False)
    specials = ["<unk>", "<s>", "</s>", *(f"<0x{i:02X}>" for i in range(256))]
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False)
    bpe.train_from_iterator(corpus, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tok = LlamaTokenizer(vocab=model["vocab"], merges=merges, add_bos_token=True)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"], "pad_token": "<pad>"})
    return tok


def _official_ids(tok, passage: str) -> list[int]:
    """conv.get_prompt() of vicuna_v1, then tokenizer_image_token (offset 1 for BOS)."""
    messages = [("USER", "<image>\n"), ("ASSISTANT", passage)]
    seps = [" ", "</s>"]
    prompt = SYSTEM + seps[0]
    for i, (role, message) in enumerate(messages):
        prompt += role + ": " + message + seps[i % 2]
    chunks = [tok(chunk).input_ids for chunk in prompt.split("<image>")]
    assert chunks[0][0] == tok.bos_token_id
    ids = [chunks[0][0]]
    for k, chunk in enumerate(chunks):
        if k:
            ids.append(IMAGE_INDEX)
        ids.extend(chunk[1:])
    return ids


@pytest.fixture(scope="module")
def adapter():
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tok = _llava15_tokenizer()
    image_id = tok.convert_tokens_to_ids("<image>")
    text = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                       num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2)  # fmt: skip
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                              num_attention_heads=2, image_size=28, patch_size=14)  # fmt: skip
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_id)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    size = {"shortest_edge": 28}
    image_processor = CLIPImageProcessorPil(size=size, crop_size={"height": 28, "width": 28})
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=14,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )  # fmt: skip
    return get_adapter(model, processor)


@pytest.mark.parametrize("passage", PASSAGES)
def test_official_template_matches_the_official_script_token_for_token(adapter, passage) -> None:
    image = Image.new("RGB", (40, 30), (200, 10, 10))
    batch = adapter.prepare([Pair(image, "x.png", passage, 0)], template="official")
    ids = batch.inputs["input_ids"][0].tolist()
    vision, text = batch.vision_mask[0].tolist(), batch.text_mask[0].tolist()
    first = vision.index(True)
    n_image = sum(vision)
    assert n_image == 4 and all(vision[first : first + n_image])  # (28 / 14)^2 patch tokens
    collapsed = [*ids[:first], IMAGE_INDEX, *ids[first + n_image :]]
    assert collapsed == _official_ids(adapter.tokenizer, passage)
    # Text = every token after the image block (the official `latent[start + 576:]`).
    assert text == [False] * (first + n_image) + [True] * (len(ids) - first - n_image)
    rendered = adapter.tokenizer.decode(ids[first + n_image :])
    assert rendered.endswith(passage + "</s>") and "ASSISTANT:" in rendered
    assert adapter.tokenizer.decode(ids[1:first]).strip() == f"{SYSTEM} USER:"
