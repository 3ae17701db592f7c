"""Checkpoints in the ecosystem's formats: the export matrix (every connector x MoCa x form,
loaded by a process where modalign cannot be imported, equal to modalign's own loader bit for
bit), the refusals, the way back to the saved model, a kept LoRA and half precision."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from modalign.errors import ConfigError, ModelError
from modalign.methods.connectors import LinearConnector, MLPConnector
from modalign.methods.lora import LoraSpec, has_lora, inject_lora, lora_state
from modalign.methods.lora_layer import PlainLoraLinear, attach_plain_lora
from modalign.methods.moca import get_moca
from modalign.models.checkpoint import save_model
from modalign.models.export import (
    AUTO_MAP,
    CUSTOM_CODE,
    LLAVA,
    MODELING_FILE,
    NATIVE,
    WRITTEN_FROM,
    ModalignLlavaForConditionalGeneration,
    choose_format,
    custom_code_refusal,
    llava_refusal,
    native_refusal,
)
from modalign.models.loading import load_model, load_processor
from modalign.models.surgery.connector_llava import (
    MODEL_TYPE,
    ConnectorLlavaForConditionalGeneration,
    ConnectorLlavaProcessor,
)
from modalign.testing.export_matrix import (
    CONNECTORS,
    Case,
    make_model,
    markdown_table,
    measure,
    probe_images,
    run_isolated,
    run_probe,
    write_cases,
)

LLAVA_CONNECTORS = {"llava", "linear", "mlp2x_gelu"}  # the rows with a plain llava form


@pytest.fixture(scope="module")
def llava_dir(tiny_dir):
    return tiny_dir("llava")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return probe_images(tmp_path_factory.mktemp("probe"))


@pytest.fixture(scope="module")
def matrix(llava_dir, images, tmp_path_factory):
    """Every cell written by save_model, then measured in one process without modalign."""
    root = tmp_path_factory.mktemp("matrix")
    cases = write_cases(llava_dir, root / "cases", images)
    cells = measure(cases, images, root / "work")
    print("\n" + markdown_table(cells))  # the matrix, for `pytest -s`
    return {(c.case.connector, c.case.moca, c.case.format): c for c in cells}


def test_matrix_covers_every_connector_moca_and_form(matrix):
    assert set(matrix) == {(c, m, f) for c in CONNECTORS for m in (False, True)
                           for f in (LLAVA, CUSTOM_CODE)}  # fmt: skip


def test_every_cell_written_loads_without_modalign_and_equals_modalign(matrix):
    written = {k for k, c in matrix.items() if c.case.folder is not None}
    assert written == {k for k in matrix if k[2] == CUSTOM_CODE} | {
        (c, False, LLAVA) for c in LLAVA_CONNECTORS
    }
    for key in sorted(written, key=str):
        cell = matrix[key]
        assert cell.loads, (key, cell.error)
        assert cell.record["blocked_modules_loaded"] == []
        assert cell.inputs_equal and cell.logits_equal and cell.generations_equal, key
        assert cell.same_as_saved, key  # modalign's loader gives back the model that was saved


def test_cells_load_with_the_classes_of_their_form(matrix):
    for (_, moca, form), cell in matrix.items():
        if cell.case.folder is None:
            continue
        config = json.loads((cell.case.folder / "config.json").read_text())
        if form == LLAVA:
            assert config["model_type"] == "llava" and "auto_map" not in config
            assert not (cell.case.folder / MODELING_FILE).exists()
            assert cell.record["model_class"].startswith("transformers.models.llava.")
            assert cell.record["processor_class"].endswith(".LlavaProcessor")
        else:
            assert config["model_type"] == MODEL_TYPE and config["auto_map"] == AUTO_MAP
            assert cell.record["model_class"].startswith("transformers_modules.")
            assert cell.record["model_class"].endswith(".ModalignLlavaForConditionalGeneration")
            assert cell.record["processor_class"].endswith(".ConnectorLlavaProcessor")
            assert ("moca" in config.get("modalign_extensions", {})) == moca


def test_refused_cells_say_why(matrix):
    for (connector, moca, form), cell in matrix.items():
        if cell.case.folder is not None:
            continue
        assert form == LLAVA, (connector, moca)
        if moca:
            assert "MoCa cannot be folded into Llama weights" in cell.case.refused
        else:
            assert f"connector {connector} is not LLaVA's projector" in cell.case.refused


def test_the_matrix_can_tell_models_apart(matrix):
    """What is compared depends on the connector and MoCa: a check that ignored MoCa, or loaded
    some other model, would not pass."""
    for connector in CONNECTORS:
        off = matrix[(connector, False, CUSTOM_CODE)].outputs["logits"]
        on = matrix[(connector, True, CUSTOM_CODE)].outputs["logits"]
        assert not torch.equal(off, on), connector
    first = matrix[("linear", False, CUSTOM_CODE)].outputs["logits"]
    assert not torch.equal(first, matrix[("mlp2x_gelu", False, CUSTOM_CODE)].outputs["logits"])


def test_custom_code_needs_trust_remote_code_and_plain_llava_does_not(matrix, images, tmp_path):
    qformer = matrix[("qformer", True, CUSTOM_CODE)].case.folder
    plain = matrix[("mlp2x_gelu", False, LLAVA)].case.folder
    jobs = [{"name": "untrusted", "path": str(qformer), "trust_remote_code": False},
            {"name": "plain", "path": str(plain), "trust_remote_code": False}]  # fmt: skip
    out = run_isolated(jobs, images, tmp_path)
    refused = json.loads((out / "untrusted.json").read_text())
    assert "trust_remote_code" in refused["error"]  # never silently a model without its parts
    assert "error" not in json.loads((out / "plain.json").read_text())


# --------------------------------------------------------------------------- the way back


def test_load_model_gives_back_the_saved_model_in_every_form(llava_dir, tmp_path):
    for connector, connector_cls in (("linear", LinearConnector), ("mlp2x_gelu", MLPConnector)):
        model, processor = make_model(llava_dir, connector, moca=False)
        state = model.state_dict()
        for form in (LLAVA, CUSTOM_CODE):
            out = save_model(model, processor, tmp_path / f"{connector}-{form}", format=form)
            loaded = load_model(str(out), "cpu", torch.float32)
            assert type(loaded) is ConnectorLlavaForConditionalGeneration
            assert type(loaded.model.multi_modal_projector) is connector_cls
            assert type(load_processor(str(out))) is ConnectorLlavaProcessor
            assert loaded.state_dict().keys() == state.keys()
            assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
            assert not hasattr(loaded.config, WRITTEN_FROM)
    # A plain llava with MoCa travels as custom code and comes back a plain llava with MoCa.
    model, processor = make_model(llava_dir, "llava", moca=True)
    out = save_model(model, processor, tmp_path / "llava-moca")
    assert json.loads((out / "config.json").read_text())[WRITTEN_FROM] == {"model_type": "llava"}
    loaded = load_model(str(out), "cpu", torch.float32)
    assert type(loaded).__name__ == "LlavaForConditionalGeneration" and get_moca(loaded)
    assert type(load_processor(str(out))).__name__ == "LlavaProcessor"
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_a_projector_changed_after_export_stays_plain_llava(llava_dir, images, tmp_path):
    model, processor = make_model(llava_dir, "linear", moca=False)
    out = save_model(model, processor, tmp_path / "linear")
    weights = load_file(str(out / "model.safetensors"))
    key = next(k for k in weights if k.endswith("linear_2.weight"))
    weights[key] = weights[key] * 1.5  # another tool trained the identity layer
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        loaded = load_model(str(out), "cpu", torch.float32)
    assert type(loaded).__name__ == "LlavaForConditionalGeneration"
    assert any("second layer is not the identity" in str(w.message) for w in seen)
    changed = run_probe(loaded, load_processor(str(out)), images)["logits"]
    assert not torch.equal(changed, run_probe(model, processor, images)["logits"])


def test_old_checkpoints_load_and_export(llava_dir, images, tmp_path):
    """A modalign_llava folder as the code before exports wrote it (no auto_map, MoCa recorded)
    loads with modalign's loader, and `export_checkpoint` makes it portable."""
    from modalign.models.export import export_checkpoint

    cases = []
    for connector in ("qformer", "mlp2x_gelu"):
        model, processor = make_model(llava_dir, connector, moca=True)
        old = tmp_path / f"old-{connector}"
        model.save_pretrained(old)
        processor.save_pretrained(old)
        assert "auto_map" not in json.loads((old / "config.json").read_text())
        reference = run_probe(model, processor, images)
        loaded = load_model(str(old), "cpu", torch.float32)
        assert torch.equal(run_probe(loaded, load_processor(str(old)), images)["logits"],
                           reference["logits"])  # fmt: skip
        out = tmp_path / f"exported-{connector}"
        assert export_checkpoint(str(old), out) == CUSTOM_CODE
        cases.append(Case(connector, True, CUSTOM_CODE, out, via="export", reference=reference))
    for cell in measure(cases, images, tmp_path / "work"):
        assert cell.loads and cell.logits_equal and cell.generations_equal, cell.error
        assert cell.same_as_saved


# --------------------------------------------------------------------------- LoRA, dtype


def _kept_lora(model, seed=5):
    inject_lora(model, LoraSpec(r=4, alpha=8.0, dropout=0.0, merge=False), "model.language_model")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_plain_lora_layer_equals_peft(dtype):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.GELU(), nn.Linear(6, 5)).to(dtype)
    inject_lora(model, LoraSpec(r=2, alpha=3.0, dropout=0.1, targets=("0", "2"), merge=False), "")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    model.eval()
    plain = nn.Sequential(nn.Linear(8, 6), nn.GELU(), nn.Linear(6, 5)).to(dtype)
    assert attach_plain_lora(plain, lora_state(model)) == ["0", "2"]
    assert all(isinstance(plain[i], PlainLoraLinear) for i in (0, 2))
    plain.load_state_dict(model.state_dict())  # the same names, peft's and ours
    assert plain[0].lora_A["default"].weight.dtype == torch.float32  # loaded as peft keeps them
    plain.eval()
    x = torch.randn(4, 3, 8).to(dtype)
    with torch.no_grad():
        assert torch.equal(plain(x), model(x))
    plain.train()  # dropout is where peft has it
    assert plain[0].lora_dropout["default"].p == 0.1


def test_kept_lora_and_moca_in_half_precision(llava_dir, images, tmp_path):
    """A kept LoRA + MoCa, in bfloat16: the exported code keeps MoCa and the adapters in float32
    as modalign does, and equals modalign's loader bit for bit."""
    cases = []
    for connector in ("llava", "qformer"):
        model, processor = make_model(llava_dir, connector, moca=True)
        _kept_lora(model)
        case = Case(connector, True, CUSTOM_CODE, via="lora")
        case.folder = save_model(model, processor, tmp_path / case.name)
        loaded = load_model(str(case.folder), "cpu", torch.float32)
        assert has_lora(loaded) and lora_state(loaded) == lora_state(model)
        case.reference = run_probe(model, processor, images)
        cases.append(case)
    for cell in measure(cases, images, tmp_path / "fp32"):
        assert cell.loads and cell.logits_equal and cell.generations_equal, cell.error
        assert cell.same_as_saved
    for cell in measure([*cases], images, tmp_path / "bf16", dtype="bfloat16"):
        assert cell.loads and cell.logits_equal and cell.generations_equal, cell.error
        kept = cell.record["kept_dtypes"]
        assert kept and set(kept.values()) == {"torch.float32"}
        assert {"moca.scale", "moca.shift"} <= set(kept)
        assert all(("moca" in k) or ("lora_A" in k) or ("lora_B" in k) for k in kept)


def test_portable_class_rebuilds_recorded_extensions_natively(llava_dir, images, tmp_path):
    """The class other tools run also loads in this process, with the same outputs."""
    model, processor = make_model(llava_dir, "pool", moca=True)
    _kept_lora(model)
    out = save_model(model, processor, tmp_path / "pool")
    portable = ModalignLlavaForConditionalGeneration.from_pretrained(out).eval()
    assert get_moca(portable) is not None
    assert any(isinstance(m, PlainLoraLinear) for m in portable.modules())
    got, want = run_probe(portable, processor, images), run_probe(model, processor, images)
    assert all(torch.equal(got[k], want[k]) for k in want)
    config = portable.config
    config.modalign_extensions = {**config.modalign_extensions, "wrap": {}}
    with pytest.raises(ModelError, match="cannot rebuild"):
        ModalignLlavaForConditionalGeneration(config)


# --------------------------------------------------------------------------- the refusals


def _config(**changes):
    base = {"model_type": MODEL_TYPE, "connector": {"name": "mlp2x_gelu", "options": {}},
            "image_seq_length": 16}  # fmt: skip
    return {**base, **changes}


def test_refusals_name_the_reason():
    moca = {"modalign_extensions": {"moca": {"num_layers": 2}}}
    lora = {"modalign_extensions": {"lora": {"r": 4}}}
    assert llava_refusal(_config()) is None
    assert llava_refusal(_config(connector={"name": "linear"})) is None
    assert llava_refusal(_config(connector={"name": "mlp1x_gelu"})) is None
    assert "mlp3x_gelu is not LLaVA's projector" in llava_refusal(
        _config(connector={"name": "mlp3x_gelu"})
    )
    assert "MoCa cannot be folded" in llava_refusal(_config(**moca))
    assert "merge it" in llava_refusal(_config(**lora))
    assert "not a LLaVA model" in llava_refusal({"model_type": "qwen2_vl"})
    assert (
        custom_code_refusal(_config(**moca)) is None
        and custom_code_refusal(_config(**lora)) is None
    )
    assert "LLaVA models" in custom_code_refusal({"model_type": "qwen2_vl"})
    unknown = {"modalign_extensions": {"wrap": {}}}
    assert "cannot rebuild the attached wrap" in custom_code_refusal(_config(**unknown))
    silu = {"model_type": "llava", "projector_hidden_act": "silu"}
    assert "not one of modalign's connectors" in custom_code_refusal(silu)
    assert native_refusal({"model_type": "qwen2_vl"}) is None
    assert "without the attached moca" in native_refusal({"model_type": "qwen2_vl", **moca})
    assert "does not know" in native_refusal(_config())


def test_choose_format_prefers_the_most_portable_form():
    moca = {"modalign_extensions": {"moca": {"num_layers": 2}}}
    assert choose_format("auto", _config()) == LLAVA
    assert choose_format("auto", _config(**moca)) == CUSTOM_CODE
    assert choose_format("custom-code", _config()) == CUSTOM_CODE
    assert choose_format("auto", {"model_type": "qwen2_vl"}) == NATIVE
    assert choose_format("auto", {"model_type": "qwen2_vl", **moca}) == NATIVE
    with pytest.raises(ModelError, match="no form of this model loads without modalign"):
        choose_format("auto", {"model_type": "qwen2_vl", **moca}, portable=True)
    with pytest.raises(ModelError, match="cannot write the llava form: MoCa"):
        choose_format("llava", _config(**moca))
    with pytest.raises(ConfigError, match="unknown format"):
        choose_format("onnx", _config())


def test_save_model_refuses_a_form_before_writing(llava_dir, tmp_path):
    model, processor = make_model(llava_dir, "qformer", moca=False)
    with pytest.raises(ModelError, match="connector qformer is not LLaVA's projector"):
        save_model(model, processor, tmp_path / "out", format=LLAVA)
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())


def test_llava_form_of_linear_is_exact_and_keeps_moca_tensors_out(llava_dir, tmp_path):
    model, processor = make_model(llava_dir, "linear", moca=False)
    out = save_model(model, processor, tmp_path / "linear")
    config = json.loads((out / "config.json").read_text())
    assert config["projector_hidden_act"] == "linear" and "connector" not in config
    with safe_open(out / "model.safetensors", framework="pt") as f:
        second = [f.get_tensor(k) for k in f.keys() if "linear_2" in k]  # noqa: SIM118
    weight = next(t for t in second if t.dim() == 2)
    bias = next(t for t in second if t.dim() == 1)
    assert torch.equal(weight, torch.eye(weight.shape[0])) and not bias.any()


def test_a_connector_in_another_dtype_than_the_tower_is_not_plain_llava(llava_dir, tmp_path):
    """transformers' llava does not cast the tower's features to the projector's dtype, so a
    float64 connector on a float32 tower has no llava form; auto writes custom code instead."""
    model, processor = make_model(llava_dir, "mlp2x_gelu", moca=False)
    model.model.multi_modal_projector.double()
    with pytest.raises(ModelError, match=r"the connector is in torch\.float64"):
        save_model(model, processor, tmp_path / "llava", format=LLAVA)
    out = save_model(model, processor, tmp_path / "auto")
    assert json.loads((out / "config.json").read_text())["model_type"] == MODEL_TYPE
