"""Assembling an HF LLaVA model from a tiny Llama, a tiny CLIP and a fake `mm_projector.bin`."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

pytest.importorskip("transformers")

from modalign.models.sequence import VICUNA_V1_SYSTEM
from modalign.models.surgery.assemble import assemble_llava, parse_projector, read_state_dict

WORDS = [
    "<unk>",
    "<s>",
    "</s>",
    "a",
    "red",
    "circle",
    "blue",
    "square",
    "hello",
    "world",
    "USER:",
    "ASSISTANT:",
    "the",
    "of",
    "on",
]
LLM_HIDDEN, VISION_HIDDEN, IMAGE, PATCH, VISION_LAYERS = 32, 24, 16, 4, 3
TOKENS_PER_IMAGE = (IMAGE // PATCH) ** 2  # CLS dropped by the "default" strategy
PROMPT = "USER: <image>\nhello world ASSISTANT:"


def _tokenizer() -> Any:
    """A word-level tokenizer (no BOS added) for the tiny LLM."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def _projector_state(prefix: str = "model.mm_projector.") -> dict[str, torch.Tensor]:
    """Random mlp2x_gelu connector weights with LLaVA's key names."""
    g = torch.Generator().manual_seed(1)
    return {
        f"{prefix}0.weight": torch.randn(LLM_HIDDEN, VISION_HIDDEN, generator=g),
        f"{prefix}0.bias": torch.randn(LLM_HIDDEN, generator=g),
        f"{prefix}2.weight": torch.randn(LLM_HIDDEN, LLM_HIDDEN, generator=g),
        f"{prefix}2.bias": torch.randn(LLM_HIDDEN, generator=g),
    }


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Save a tiny Llama (+tokenizer), a full tiny CLIPModel, its vision-only model, a projector."""
    from transformers import (
        CLIPConfig,
        CLIPModel,
        CLIPVisionModel,
        LlamaConfig,
        LlamaForCausalLM,
    )

    root = tmp_path_factory.mktemp("parts")
    torch.manual_seed(0)
    llm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(WORDS),
            hidden_size=LLM_HIDDEN,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            bos_token_id=1,
            eos_token_id=2,
        )
    )
    llm.save_pretrained(root / "llm")
    _tokenizer().save_pretrained(root / "llm")
    vision = {
        "hidden_size": VISION_HIDDEN,
        "intermediate_size": 48,
        "num_hidden_layers": VISION_LAYERS,
        "num_attention_heads": 4,
        "image_size": IMAGE,
        "patch_size": PATCH,
    }
    text = {
        "vocab_size": 40,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 16,
        "bos_token_id": 0,
        "eos_token_id": 1,
    }
    clip = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8))
    clip.save_pretrained(root / "clip")
    vision_only = CLIPVisionModel(clip.config.vision_config)
    vision_only.load_state_dict(clip.vision_model.state_dict())  # flat in transformers 5.x
    vision_only.save_pretrained(root / "clip_vision")
    torch.save(_projector_state(), root / "mm_projector.bin")
    return {
        "llm": root / "llm",
        "clip": root / "clip",
        "clip_vision": root / "clip_vision",
        "projector": root / "mm_projector.bin",
        "root": root,
    }


@pytest.fixture(scope="module")
def assembled(parts: dict[str, Path]) -> tuple[Any, Any]:
    """The default assembly (mlp2x_gelu from .bin, full CLIPModel tower, layer -2, no CLS)."""
    return assemble_llava(parts["llm"], parts["clip"], parts["projector"])


def _image() -> Image.Image:
    return Image.new("RGB", (30, 20), (200, 30, 0))


def test_projector_weights_land_exactly(assembled: tuple[Any, Any]) -> None:
    model, _ = assembled
    proj = model.model.multi_modal_projector
    state = _projector_state()
    assert torch.equal(proj.linear_1.weight, state["model.mm_projector.0.weight"])
    assert torch.equal(proj.linear_1.bias, state["model.mm_projector.0.bias"])
    assert torch.equal(proj.linear_2.weight, state["model.mm_projector.2.weight"])
    assert torch.equal(proj.linear_2.bias, state["model.mm_projector.2.bias"])
    assert model.config.projector_hidden_act == "gelu"


def test_towers_are_the_saved_ones(assembled: tuple[Any, Any], parts: dict[str, Path]) -> None:
    from transformers import CLIPModel, LlamaForCausalLM

    model, _ = assembled
    clip = CLIPModel.from_pretrained(parts["clip"])
    llm = LlamaForCausalLM.from_pretrained(parts["llm"])
    vt = model.model.vision_tower.state_dict()
    assert vt.keys() == clip.vision_model.state_dict().keys()
    assert all(torch.equal(vt[k], v) for k, v in clip.vision_model.state_dict().items())
    lm = model.model.language_model.state_dict()
    for k, v in llm.model.state_dict().items():
        if k == "embed_tokens.weight":  # grown by the added tokens; the old rows are unchanged
            assert torch.equal(lm[k][: v.shape[0]], v)
            new_rows = lm[k][v.shape[0] :]  # <image>, <pad>: deterministic mean initialisation
            assert new_rows.shape[0] == 2
            torch.testing.assert_close(new_rows, v.mean(0).expand_as(new_rows))
        else:
            assert torch.equal(lm[k], v), k
    assert torch.equal(model.lm_head.weight[: len(WORDS)], llm.lm_head.weight)
    head_new = model.lm_head.weight[len(WORDS) :]
    torch.testing.assert_close(head_new, llm.lm_head.weight.mean(0).expand_as(head_new))


def test_forward_image_tokens_and_features(assembled: tuple[Any, Any]) -> None:
    model, processor = assembled
    inputs = processor(images=_image(), text=PROMPT, return_tensors="pt")
    image_id = model.config.image_token_id
    assert processor.tokenizer.convert_ids_to_tokens(image_id) == "<image>"
    assert int((inputs["input_ids"] == image_id).sum()) == TOKENS_PER_IMAGE
    assert model.config.image_seq_length == TOKENS_PER_IMAGE
    assert inputs["pixel_values"].shape == (1, 3, IMAGE, IMAGE)
    with torch.inference_mode():
        out = model(**inputs, output_hidden_states=True)
        assert out.logits.shape == (1, inputs["input_ids"].shape[1], len(processor.tokenizer))
        assert torch.isfinite(out.logits).all()
        # LLaVA's recipe: CLIP layer -2, CLS dropped, then linear -> GELU -> linear.
        vision_states = model.model.vision_tower(inputs["pixel_values"], output_hidden_states=True)
        selected = vision_states.hidden_states[-2][:, 1:]  # (1, patches, d_vision)
        state = _projector_state()
        expected = torch.nn.functional.gelu(
            selected @ state["model.mm_projector.0.weight"].T + state["model.mm_projector.0.bias"]
        )
        expected = (
            expected @ state["model.mm_projector.2.weight"].T + state["model.mm_projector.2.bias"]
        )
        features = model.model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
        torch.testing.assert_close(features[0], expected[0])


def test_chat_template_is_vicuna_v1(assembled: tuple[Any, Any]) -> None:
    _, processor = assembled
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hello"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "red circle"}]},
    ]
    text = processor.apply_chat_template(messages, tokenize=False)
    assert text == f"{VICUNA_V1_SYSTEM} USER: <image>\nhello ASSISTANT: red circle</s>"


def test_save_and_reload_through_auto_classes(parts: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = tmp_path / "assembled"
    model, processor = assemble_llava(parts["llm"], parts["clip_vision"], parts["projector"], out)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp dir renamed
    reloaded = AutoModelForImageTextToText.from_pretrained(out)
    reprocessor = AutoProcessor.from_pretrained(out)
    inputs = processor(images=_image(), text=PROMPT, return_tensors="pt")
    again = reprocessor(images=_image(), text=PROMPT, return_tensors="pt")
    assert torch.equal(inputs["input_ids"], again["input_ids"])
    with torch.inference_mode():
        torch.testing.assert_close(model(**inputs).logits, reloaded(**again).logits)
    with pytest.raises(ValueError, match="exists and is not empty"):
        assemble_llava(parts["llm"], parts["clip_vision"], parts["projector"], out)


def test_linear_projector_from_safetensors(parts: dict[str, Path], tmp_path: Path) -> None:
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(2)
    weight, bias = (
        torch.randn(LLM_HIDDEN, VISION_HIDDEN, generator=g),
        torch.randn(LLM_HIDDEN, generator=g),
    )
    path = tmp_path / "mm_projector.safetensors"
    save_file({"model.mm_projector.weight": weight, "model.mm_projector.bias": bias}, path)
    model, _ = assemble_llava(parts["llm"], parts["clip"], path, projector_type="linear")
    x = torch.randn(5, VISION_HIDDEN, generator=g)
    with torch.inference_mode():
        torch.testing.assert_close(model.model.multi_modal_projector(x), x @ weight.T + bias)


def test_run_folder_config_sets_layer_and_strategy(parts: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    torch.save(
        _projector_state(prefix="base_model.model.model.mm_projector."), run / "mm_projector.bin"
    )
    config = {
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -1,
        "mm_vision_select_feature": "cls_patch",
    }
    (run / "config.json").write_text(json.dumps(config))
    model, processor = assemble_llava(parts["llm"], parts["clip"], run, dtype="bfloat16")
    assert model.config.vision_feature_layer == -1
    assert model.config.vision_feature_select_strategy == "full"
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    inputs = processor(images=_image(), text=PROMPT, return_tensors="pt")
    count = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert count == TOKENS_PER_IMAGE + 1 == model.config.image_seq_length  # CLS kept
    with torch.inference_mode():
        assert torch.isfinite(model(**inputs).logits.float()).all()


@pytest.mark.parametrize(
    ("drop", "change", "pattern"),
    [
        ("model.mm_projector.2.bias", None, r"missing key '2\.bias'"),
        (
            None,
            ("model.mm_projector.0.weight", (LLM_HIDDEN, 20)),
            r"linear_1\.weight: got \(32, 20\), expected \(32, 24\)",
        ),
        (None, ("model.mm_projector.4.weight", (LLM_HIDDEN, LLM_HIDDEN)), "3 linear layers"),
        (None, ("model.mm_projector.extra", (3,)), "unexpected projector keys.*extra"),
    ],
)
def test_bad_projector_weights(
    parts: dict[str, Path],
    tmp_path: Path,
    drop: str | None,
    change: tuple[str, tuple[int, ...]] | None,
    pattern: str,
) -> None:
    state = _projector_state()
    if drop:
        state.pop(drop)
    if change:
        state[change[0]] = torch.zeros(change[1])
    path = tmp_path / "mm_projector.bin"
    torch.save(state, path)
    with pytest.raises(ValueError, match=pattern):
        assemble_llava(parts["llm"], parts["clip"], path)


def test_projector_type_must_match_keys() -> None:
    with pytest.raises(ValueError, match="do not match linear"):
        parse_projector(_projector_state(), "linear")
    with pytest.raises(ValueError, match="projector_type must be one of"):
        parse_projector(_projector_state(), "mlp3x_gelu")


class _Payload:
    """Not a tensor: `weights_only=True` must refuse to unpickle it."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("unpickled!",))


def test_unsafe_or_unreadable_files_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evil = tmp_path / "evil.bin"
    with evil.open("wb") as fh:
        pickle.dump({"model.mm_projector.weight": _Payload()}, fh, protocol=2)
    with pytest.raises(ValueError, match="weights_only=True"):
        read_state_dict(evil)
    assert "unpickled!" not in capsys.readouterr().out
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot read safetensors"):
        read_state_dict(garbage)
    with pytest.raises(ValueError, match=r"expected a \.bin"):
        read_state_dict(tmp_path / "weights.npz")


def test_bad_folders(parts: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a causal LM"):
        assemble_llava(parts["clip"], parts["clip"], parts["projector"])
    with pytest.raises(ValueError, match="not a ViT-style vision tower"):
        assemble_llava(parts["llm"], parts["llm"], parts["projector"])
    with pytest.raises(ValueError, match=r"LLM folder .* does not exist"):
        assemble_llava(tmp_path / "nope", parts["clip"], parts["projector"])
    with pytest.raises(ValueError, match=r"no mm_projector\.bin or mm_projector\.safetensors"):
        assemble_llava(parts["llm"], parts["clip"], tmp_path)
    with pytest.raises(ValueError, match="out of range"):
        assemble_llava(parts["llm"], parts["clip"], parts["projector"], vision_feature_layer=7)


def test_assemble_cli(
    parts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from modalign.cli import main

    out = tmp_path / "cli_out"
    argv = ["assemble", "--llm", str(parts["llm"]), "--vision-tower", str(parts["clip"])]
    assert main([*argv, "--projector", str(parts["projector"]), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert f"written to {out}" in stdout and f"{TOKENS_PER_IMAGE} image tokens" in stdout
    assert (out / "config.json").is_file() and (out / "chat_template.jinja").is_file()
    missing = ["--projector", str(tmp_path / "missing.bin"), "--out", str(tmp_path / "o2")]
    assert main([*argv, *missing]) == 2
    assert "do not exist" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_tied_embeddings_survive_resize_and_reload(parts: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForImageTextToText, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(3)
    config = LlamaConfig.from_pretrained(parts["llm"])
    config.tie_word_embeddings = True
    LlamaForCausalLM(config).save_pretrained(tmp_path / "tied")
    _tokenizer().save_pretrained(tmp_path / "tied")
    out = tmp_path / "out"
    model, processor = assemble_llava(tmp_path / "tied", parts["clip"], parts["projector"], out)
    assert model.config.tie_word_embeddings
    embed = model.model.language_model.embed_tokens.weight
    assert model.lm_head.weight.data_ptr() == embed.data_ptr()
    assert embed.shape[0] == len(processor.tokenizer) == len(WORDS) + 2  # <image> and <pad>
    reloaded = AutoModelForImageTextToText.from_pretrained(out)
    inputs = processor(images=_image(), text=PROMPT, return_tensors="pt")
    with torch.inference_mode():
        torch.testing.assert_close(model(**inputs).logits, reloaded(**inputs).logits)


def test_siglip_tower_needs_full_strategy(parts: dict[str, Path], tmp_path: Path) -> None:
    from transformers import SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(4)
    tower = SiglipVisionModel(
        SiglipVisionConfig(
            hidden_size=VISION_HIDDEN,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=IMAGE,
            patch_size=PATCH,
        )
    )
    tower.save_pretrained(tmp_path / "siglip")
    with pytest.raises(ValueError, match=r"no CLS token.*'full'"):
        assemble_llava(parts["llm"], tmp_path / "siglip", parts["projector"])
    model, processor = assemble_llava(
        parts["llm"], tmp_path / "siglip", parts["projector"], vision_feature_select_strategy="full"
    )
    inputs = processor(images=_image(), text=PROMPT, return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == TOKENS_PER_IMAGE
    with torch.inference_mode():
        assert torch.isfinite(model(**inputs).logits).all()


def test_bad_select_feature_in_run_config(parts: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    torch.save(_projector_state(), run / "mm_projector.bin")
    (run / "config.json").write_text(json.dumps({"mm_vision_select_feature": "cls"}))
    with pytest.raises(ValueError, match="mm_vision_select_feature"):
        assemble_llava(parts["llm"], parts["clip"], run)


def test_pad_to_square_uses_the_mean_colour(parts: dict[str, Path]) -> None:
    _, padded = assemble_llava(parts["llm"], parts["clip"], parts["projector"], pad_to_square=True)
    _, cropped = assemble_llava(parts["llm"], parts["clip"], parts["projector"])
    wide = Image.new("RGB", (32, 16), (200, 30, 0))  # padded to 32x32: 8 mean-colour rows on top
    pad_pixels = padded.image_processor(wide, return_tensors="pt")["pixel_values"]
    crop_pixels = cropped.image_processor(wide, return_tensors="pt")["pixel_values"]
    assert pad_pixels.shape == crop_pixels.shape == (1, 3, IMAGE, IMAGE)
    assert pad_pixels[0, :, 0].abs().max() < 0.05  # mean colour normalises to ~0
    assert crop_pixels[0, :, 0].abs().max() > 1.0  # centre crop: the red image itself
