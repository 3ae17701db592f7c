"""Training batches: image expansion as the processor does it, loss only on what is produced."""

from __future__ import annotations

import pytest
import torch
from modalign_lab.towers.llava import load_llava
from modalign_lab.world.conversations import caption_conversations, vqa_conversations
from modalign_lab.world.dataset import load_split

from modalign.data.conversations import ConversationDataset
from modalign.errors import DataError
from modalign.models.collate import IGNORE, ChatCollator, PlainCollator, image_token_count


@pytest.fixture(scope="module")
def proc(tiny_llava):
    return load_llava(tiny_llava)[1]


@pytest.fixture(scope="module")
def records(tiny_data):
    return load_split(tiny_data, "train", 3)


def test_plain_template_is_llava_preprocess_plain(proc, records):
    tok = proc.tokenizer
    sample = ConversationDataset(caption_conversations(records, 2))[0]
    n = image_token_count(proc)
    for end, tail in (("eos", [tok.eos_token_id]), ("\n", None)):
        batch = PlainCollator(proc, end=end)([sample])
        ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
        caption = sample.conversation.caption
        body = (tok(caption, add_special_tokens=False)["input_ids"] + tail if tail
                else tok(caption + end, add_special_tokens=False)["input_ids"])  # fmt: skip
        assert ids == [tok.bos_token_id] + [tok.image_token_id] * n + body
        assert labels == [IGNORE] * (1 + n) + body
        # The processor expands the same text to the same ids and pixels.
        ref = proc(images=[sample.image], text=[tok.image_token + caption], return_tensors="pt")
        assert ids[: ref["input_ids"].shape[1]] == ref["input_ids"][0].tolist()
        assert torch.equal(batch["pixel_values"], ref["pixel_values"])


def test_chat_template_targets_only_the_answers(proc, records):
    tok = proc.tokenizer
    convs = vqa_conversations(records, multi_turn=True, seed=0)
    assert len(convs[0].turns) == len(records[0].vqa) >= 5
    assert sorted(convs[0].turns) == sorted((q.question, q.answer) for q in records[0].vqa)
    data = ConversationDataset(convs)
    batch = ChatCollator(proc)([data[0], data[1]])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    assert int((ids == tok.image_token_id).sum()) == image_token_count(proc)
    targets = labels[labels != IGNORE].tolist()
    expected = [t for _, a in convs[0].turns
                for t in [*tok(" " + a, add_special_tokens=False)["input_ids"], tok.eos_token_id]]  # fmt: skip
    assert targets == expected
    # The first turn is exactly the single-turn sample; its prompt is the generation prompt.
    single = vqa_conversations(records[:1], multi_turn=False)
    first = next(c for c in single if c.turns[0] == convs[0].turns[0])
    one = ChatCollator(proc)([ConversationDataset([first])[0]])
    k = one["input_ids"].shape[1]
    assert torch.equal(one["input_ids"][0], ids[:k]) and torch.equal(one["labels"][0], labels[:k])
    gen = ChatCollator(proc).generation_batch([ConversationDataset([first])[0]])
    prompt_len = int((one["labels"][0] == IGNORE).sum())
    assert gen["input_ids"][0].tolist() == ids[:prompt_len].tolist()


def test_truncation_never_cuts_the_image(proc, records):
    sample = ConversationDataset(caption_conversations(records, 3))[0]
    n = image_token_count(proc)
    batch = PlainCollator(proc, max_length=n + 3, end="eos")([sample])
    assert batch["input_ids"].shape[1] == n + 3
    with pytest.raises(DataError, match="inside the image tokens"):
        PlainCollator(proc, max_length=n - 1, end="eos")([sample])


def test_instruction_ids_for_text_reading_connectors(proc, records):
    sample = ConversationDataset(vqa_conversations(records, multi_turn=False))[0]
    batch = ChatCollator(proc, connector_text=True)([sample])
    question = sample.conversation.turns[0][0]
    expected = proc.tokenizer(question, add_special_tokens=False)["input_ids"]
    assert batch["connector_input_ids"][0].tolist() == expected
    assert "connector_input_ids" not in ChatCollator(proc)([sample])


def test_inserted_cognition_turns_keep_answer_only_labels(proc, records):
    from modalign.methods.vlsa.cognition import CognitionTargets

    tok = proc.tokenizer
    base = ConversationDataset(vqa_conversations(records, multi_turn=True, seed=0))
    data = CognitionTargets(base, probability=1.0, kinds=("pixel",), grid=4, seed=3)
    sample = data[0]
    turns = sample.conversation.turns
    assert len(turns) == len(base.conversations[0].turns) + 1
    labels = ChatCollator(proc)([sample])["labels"][0]
    targets = labels[labels != IGNORE].tolist()
    expected = [t for _, a in turns
                for t in [*tok(" " + a, add_special_tokens=False)["input_ids"], tok.eos_token_id]]  # fmt: skip
    assert targets == expected  # the inserted answer is learned, no question is


def test_one_template_table_serves_adapters_and_collators():
    """Every template that trains has exactly one collator, every one that measures has an
    adapter row builder, and a template that does not train is refused by a stage."""
    from modalign.data.templates import measuring_templates, training_templates
    from modalign.errors import ConfigError
    from modalign.models import TEMPLATES, VLMAdapter, collator_class
    from modalign.train import Stage, UnlockSpec

    assert set(training_templates()) == {"plain", "chat"}
    assert measuring_templates() == ("chat", "plain", "official")  # the declared order
    for name in training_templates():
        assert collator_class(name).template == name
    for name in measuring_templates():
        assert callable(getattr(VLMAdapter, f"_{name}_row"))
    assert not TEMPLATES["official"].trains
    with pytest.raises(ConfigError, match="template must be one of"):
        Stage("pretrain", "official", UnlockSpec())
