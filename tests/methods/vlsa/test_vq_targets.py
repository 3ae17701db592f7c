"""VQ targets: nearest codes (= diffusers' own quantizer), decode back, tokenizer fit."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from modalign.data.conversations import Conversation, Sample
from modalign.errors import ConfigError, ModelError
from modalign.methods.vlsa.cognition import parse_vq_answer, vq_answer
from modalign.methods.vlsa.vq_targets import VQCodeReader, check_codes_fit, codebook, vq_codes
from modalign.testing.tiny_diffusion import tiny_vq

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def vq():
    return tiny_vq().eval()


def test_codes_are_the_nearest_codes_and_decode_back(vq):
    pixels = torch.rand(3, 3, 16, 16) * 2 - 1
    codes = vq_codes(vq, pixels)
    assert codes.shape == (3, 8 * 8) and codes.dtype == torch.int64
    with torch.no_grad():
        latents = vq.encode(pixels).latents  # (B, d', h', w')
        quantized, _, (_, _, indices) = vq.quantize(latents)
    assert torch.equal(codes.flatten(), indices.flatten())  # diffusers' own nearest code
    # Independent check: brute-force squared distances in float64.
    flat = latents.permute(0, 2, 3, 1).reshape(3, 64, 4).double()
    book = codebook(vq).double()
    brute = ((flat[:, :, None] - book[None, None]) ** 2).sum(-1).argmin(-1)
    assert torch.equal(codes, brute)
    # Text -> codes -> code vectors = the quantized latents.
    back = torch.tensor([parse_vq_answer(vq_answer(row.tolist())) for row in codes])
    z = book.float()[back].reshape(3, 8, 8, 4).permute(0, 3, 1, 2)
    assert torch.allclose(z, quantized, atol=1e-6)


def test_reader_gives_the_codes_of_a_sample(vq):
    image = Image.new("RGB", (40, 40), (200, 30, 90))
    sample = Sample(Conversation("c", None, (("q", "a"),)), image)
    codes = VQCodeReader(vq, size=16)(sample)
    pixels = torch.empty(1, 3, 16, 16)
    for c, v in enumerate((200, 30, 90)):
        pixels[0, c] = v / 127.5 - 1
    assert codes == vq_codes(vq, pixels)[0].tolist()
    with pytest.raises(ModelError, match="no image"):
        VQCodeReader(vq, size=16)(Sample(sample.conversation, None))
    with pytest.raises(ModelError, match="VQModel"):
        VQCodeReader(torch.nn.Linear(2, 2), size=16)


def _word_tokenizer(vocab: list[str]) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def test_codebook_must_fit_the_tokenizers_digits(tiny_llava):
    from modalign_lab.towers.llava import load_llava

    check_codes_fit(load_llava(tiny_llava)[1].tokenizer, 512)  # the lab's BPE writes any number
    small = _word_tokenizer(["[UNK]", *map(str, range(10))])
    check_codes_fit(small, 10)
    with pytest.raises(ConfigError, match="does not fit"):
        check_codes_fit(small, 11)  # "10" is one unknown word
    with pytest.raises(ConfigError, match="at least one"):
        check_codes_fit(small, 0)
