"""Small BPE tokenizer trained with `tokenizers`, wrapped as a transformers fast tokenizer.

Special tokens have fixed ids (pad 0, unk 1, bos 2, eos 3, <image> 4); eos is not 2 on purpose,
because CLIPTextModel treats eos_token_id == 2 as a legacy "argmax of ids" pooling flag.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import PreTrainedTokenizerFast

from modalign.errors import ConfigError

PAD, UNK, BOS, EOS, IMAGE = "<pad>", "<unk>", "<s>", "</s>", "<image>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, BOS, EOS, IMAGE)

# USER/ASSISTANT turns; content may be a string or a list of {"type": "image"|"text"} parts.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: "
    "{% else %}{{ message['role'] | upper }}: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{{ '\\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}</s>{% endif %}{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """BPE over Metaspace words; the alphabet covers printable ASCII so nothing maps to <unk>."""
    if vocab_size < len(SPECIAL_TOKENS) + len(string.printable):
        raise ConfigError(f"vocab_size {vocab_size} too small for the ASCII alphabet")
    tok = Tokenizer(models.BPE(unk_token=UNK))
    # Newlines/tabs become spaces so template line breaks never map to <unk>.
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace("\n", " "), normalizers.Replace("\t", " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"),
            pre_tokenizers.Punctuation(),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=sorted(set(string.printable.strip()) | {"▁"}),
        min_frequency=2,
        show_progress=False,
    )
    # The chat-template words are part of every SFT sample: give them whole-word tokens.
    template_lines = ["USER: ASSISTANT: SYSTEM:"] * 10
    tok.train_from_iterator([*template_lines, *texts], trainer=trainer)
    for i, t in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(t) != i:
            raise RuntimeError(f"special token {t!r} got id {tok.token_to_id(t)}, expected {i}")
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, 2)]
    )
    return wrap_tokenizer(tok)


def wrap_tokenizer(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """transformers view of a trained `tokenizers.Tokenizer`, with chat template and <image>."""
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        extra_special_tokens={"image_token": IMAGE},
        model_max_length=512,
        padding_side="right",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast
