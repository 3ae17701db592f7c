"""Connectors: specs and their errors, shapes and token counts, references, gradients, seeding."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from modalign.errors import ConfigError, ModelError
from modalign.methods.connectors import (
    CONNECTORS,
    ConnectorSpec,
    MLPConnector,
    build_connector,
    connector_class,
    reset_connector,
)

DV, D, N, VOCAB = 12, 20, 16, 50  # tiny vision width, LLM width, 4x4 grid, vocab
QF = "qformer:num_queries=5,num_layers=3,hidden_size=16,num_heads=4,intermediate_size=24,dropout=0"
QF_TEXT = QF + ",text_input=instruction"
RS = "resampler:num_queries=6,num_layers=2,num_heads=2,head_dim=4"
# spec -> M for N = 16 input tokens
TINY = {
    "linear": 16,
    "mlp1x_gelu": 16,
    "mlp2x_gelu": 16,
    "mlp3x_gelu": 16,
    "mlp4x_gelu": 16,
    "pool": 16,  # default grid 8 clipped to the 4x4 input grid
    "pool:grid=2": 4,
    "pool:grid=3": 9,
    RS: 6,
    RS + ",hidden_size=8": 6,
    QF: 5,
    QF_TEXT: 5,
}


def _build(spec: str, seed: int = 0) -> nn.Module:
    return build_connector(spec, DV, D, N, vocab_size=VOCAB, seed=seed).eval()


# --------------------------------------------------------------------------- specs


def test_spec_parses_cli_strings_and_round_trips():
    spec = ConnectorSpec.parse("qformer:num_queries=32,text_input=instruction")
    assert spec.name == "qformer"
    assert spec.options == {"num_queries": 32, "text_input": "instruction"}  # typed values
    assert ConnectorSpec.parse(str(spec)) == spec
    assert ConnectorSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert ConnectorSpec.coerce(spec.to_dict()) == spec == ConnectorSpec.coerce(spec)
    full = spec.resolved()
    assert full.options["num_layers"] == 12 and full.options["hidden_size"] == 768
    assert full.options["num_queries"] == 32 and full.options["cross_attention_frequency"] == 2
    assert ConnectorSpec.parse(str(full)) == full  # floats and None survive the CLI form too
    rs = ConnectorSpec.parse("resampler").resolved()
    assert rs.options["hidden_size"] is None and ConnectorSpec.parse(str(rs)) == rs
    assert ConnectorSpec.parse(" pool : grid = 4 ").options == {"grid": 4}
    assert ConnectorSpec.parse("mlp7x_gelu").to_dict() == {"name": "mlp7x_gelu", "options": {}}


def test_unknown_name_lists_choices():
    with pytest.raises(ConfigError) as err:
        ConnectorSpec.parse("transformer")
    for name in ("linear", "mlp2x_gelu", "mlp4x_gelu", "pool", "qformer", "resampler"):
        assert name in str(err.value)
    assert "mlp<N>x_gelu" in str(err.value)
    with pytest.raises(ConfigError, match="choose one of"):
        connector_class("mlp2x_relu")
    with pytest.raises(ConfigError, match="at least 1 layer"):
        ConnectorSpec.parse("mlp0x_gelu")
    assert set(CONNECTORS.names()) >= {"linear", "mlp2x_gelu", "pool", "qformer", "resampler"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("qformer:num_querys=32", r"unknown option\(s\) num_querys; valid options: num_queries"),
        ("linear:bias=false", "takes no options"),
        ("qformer:num_queries=abc", "not a valid int"),
        ("qformer:num_queries=1.5", "not a valid int"),
        ("qformer:text_input=full", "is not one of: none, instruction"),
        ("qformer:num_queries", "is not key=value"),
        ("qformer:num_queries=2,num_queries=3", "given twice"),
        ("qformer:hidden_size=10,num_heads=4", "not a multiple"),
        ("qformer:dropout=1", r"dropout must be in \[0, 1\)"),
        ("pool:grid=0", "grid must be > 0"),
        ("resampler:num_layers=-1", "num_layers must be > 0"),
        ("", "non-empty"),
    ],
)
def test_bad_options_are_config_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        ConnectorSpec.parse(text)


def test_bad_dict_forms():
    with pytest.raises(ConfigError, match="needs 'name'"):
        ConnectorSpec.from_dict({"type": "linear"})
    with pytest.raises(ConfigError, match="must be a mapping"):
        ConnectorSpec.from_dict({"name": "pool", "options": [1]})
    with pytest.raises(ConfigError, match="not a valid int"):
        ConnectorSpec.from_dict({"name": "pool", "options": {"grid": True}})
    with pytest.raises(ConfigError, match="cannot make"):
        ConnectorSpec.coerce(3)


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(("spec", "m"), TINY.items())
def test_shapes_and_token_counts(spec, m):
    connector = _build(spec)
    x = torch.randn(3, N, DV)
    with torch.no_grad():
        y = connector(x)
    assert y.shape == (3, m, D)
    assert connector.num_output_tokens(N) == m == ConnectorSpec.parse(spec).output_tokens(N)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
@pytest.mark.parametrize("spec", ["mlp2x_gelu", "pool:grid=2", RS, QF_TEXT])
def test_other_dtypes(spec, dtype):
    connector = _build(spec).to(dtype)
    y = connector(torch.randn(2, N, DV, dtype=dtype))
    assert y.dtype == dtype and y.shape[-1] == D and torch.isfinite(y.float()).all()


def test_real_size_mlp2x_gelu_forward():
    connector = build_connector("mlp2x_gelu", 1024, 4096, 576)
    assert sum(p.numel() for p in connector.parameters()) == 1024 * 4096 + 4096 + 4096 * 4097
    with torch.no_grad():
        assert connector(torch.randn(1, 3, 1024)).shape == (1, 3, 4096)
    assert connector.num_output_tokens(576) == 576


def _qformer_params(dv: int, d: int, vocab: int | None) -> int:
    """BERT-base Q-Former (12 layers, 768, 3072, cross-attention on even layers) + 32 queries."""
    h, inter, layers = 768, 3072, 12
    self_attn = 4 * (h * h + h) + 2 * h
    cross = 2 * (h * h + h) + 2 * (dv * h + h) + 2 * h
    ffn = (h * inter + inter) + (inter * h + h) + 2 * h
    total = 2 * h + layers * (self_attn + ffn) + (layers // 2) * cross + 32 * h + (h * d + d)
    if vocab:  # word + position embeddings and the text feed-forward of every layer
        total += vocab * h + 512 * h + layers * ffn
    return total


def _resampler_params(dv: int, d: int) -> int:
    """TinyLLaVA-size resampler at width Dv: 128 latents, 3 layers, 8 x 64 heads, FFN x4."""
    inner = 8 * 64
    block = 2 * (2 * dv) + dv * inner + dv * 2 * inner + inner * dv + 2 * dv + 2 * (dv * 4 * dv)
    return 128 * dv + 3 * block + 2 * dv + (dv * d + d)


@pytest.mark.parametrize(
    ("spec", "vocab", "m", "params"),
    [
        ("qformer", None, 32, _qformer_params(1024, 4096, None)),
        ("qformer:text_input=instruction", 32000, 32, _qformer_params(1024, 4096, 32000)),
        ("resampler", None, 128, _resampler_params(1024, 4096)),
        ("pool", None, 64, 1024 * 4096 + 4096),
        ("mlp4x_gelu", None, 576, 1024 * 4096 + 4096 + 3 * (4096 * 4096 + 4096)),
    ],
)
def test_real_size_shapes_on_meta(spec, vocab, m, params):
    """LLaVA-1.5-7B sizes (CLIP-L/336: 576 x 1024 -> 4096), built without memory on `meta`."""
    with torch.device("meta"):
        connector = build_connector(spec, 1024, 4096, 576, vocab_size=vocab)
        y = connector(torch.empty(2, 576, 1024))
    assert sum(p.numel() for p in connector.parameters()) == params
    assert y.shape == (2, m, 4096) == (2, connector.num_output_tokens(576), 4096)


# --------------------------------------------------------------------------- references


def _llava_projector(projector_type: str, mm_hidden: int, hidden: int) -> nn.Module:
    """LLaVA's `build_vision_projector` for linear / mlp<N>x_gelu, written out independently."""
    if projector_type == "linear":
        return nn.Linear(mm_hidden, hidden)
    depth = int(re.match(r"^mlp(\d+)x_gelu$", projector_type).group(1))
    modules: list[nn.Module] = [nn.Linear(mm_hidden, hidden)]
    for _ in range(1, depth):
        modules.append(nn.GELU())
        modules.append(nn.Linear(hidden, hidden))
    return nn.Sequential(*modules)


@pytest.mark.parametrize("name", ["linear", "mlp1x_gelu", "mlp2x_gelu", "mlp3x_gelu", "mlp4x_gelu"])
def test_mlp_loads_llava_mm_projector_keys(name):
    torch.manual_seed(1)
    reference = _llava_projector(name, DV, D)
    # mm_projector.bin as LLaVA saves it: keys prefixed by model.mm_projector.
    saved = {f"model.mm_projector.{k}": v for k, v in reference.state_dict().items()}
    connector = build_connector(name, DV, D, N)
    state = {k.removeprefix("model.mm_projector."): v for k, v in saved.items()}
    connector.load_state_dict(state, strict=True)
    x = torch.randn(2, N, DV)
    assert torch.equal(connector(x), reference(x))
    assert list(connector.state_dict()) == list(reference.state_dict())
    if name != "linear":
        assert isinstance(connector, MLPConnector) and connector.depth == int(name[3])


def _adaptive_pool_reference(x: np.ndarray, out: int) -> np.ndarray:
    """(s, s, C) -> (out, out, C) by averaging the regions [floor(i s/o), ceil((i+1) s/o))."""
    s = x.shape[0]
    res = np.zeros((out, out, x.shape[2]))
    for i in range(out):
        r0, r1 = (i * s) // out, math.ceil((i + 1) * s / out)
        for j in range(out):
            c0, c1 = (j * s) // out, math.ceil((j + 1) * s / out)
            res[i, j] = x[r0:r1, c0:c1].mean(axis=(0, 1))
    return res


@pytest.mark.parametrize(("side", "grid"), [(24, 8), (5, 2), (7, 3), (4, 8), (6, 6)])
def test_pool_matches_region_average_then_linear(side, grid):
    n = side * side
    connector = build_connector(f"pool:grid={grid}", DV, D, n, seed=3).double()
    x = torch.randn(2, n, DV, dtype=torch.float64)
    with torch.no_grad():
        y = connector(x)
    w = connector.proj.weight.detach().numpy()
    b = connector.proj.bias.detach().numpy()
    out = min(grid, side)
    for k in range(2):
        pooled = _adaptive_pool_reference(x[k].numpy().reshape(side, side, DV), out)
        expected = pooled.reshape(out * out, DV) @ w.T + b  # row-major grid order
        np.testing.assert_allclose(y[k].numpy(), expected, rtol=1e-12, atol=1e-12)


def test_pool_refuses_non_square_grids():
    with pytest.raises(ModelError, match="square patch grid, got 17"):
        build_connector("pool", DV, D, 17)
    connector = build_connector("pool", DV, D, 16)
    with pytest.raises(ModelError, match="square"):
        connector(torch.randn(1, 577, DV))
    with pytest.raises(ModelError, match="square"):
        connector.num_output_tokens(577)


# --------------------------------------------------------------------------- Q-Former


def test_qformer_structure_follows_blip2():
    connector = _build(QF)
    layers = connector.qformer.encoder.layer
    assert [layer.has_cross_attention for layer in layers] == [True, False, True]
    cross = layers[0].crossattention.attention
    assert cross.key.in_features == DV and cross.query.in_features == 16
    assert connector.query_tokens.shape == (1, 5, 16)
    big = build_connector("qformer:num_queries=64,hidden_size=64,num_heads=4", DV, D, N, seed=0)
    assert abs(big.query_tokens.std().item() - 0.02) < 0.003  # N(0, 0.02) as in BLIP-2


def test_qformer_instruction_changes_output_and_padding_side_does_not():
    connector = _build(QF_TEXT)
    assert connector.accepts_text
    x = torch.randn(2, N, DV)
    a = torch.tensor([[3, 4, 5, 6], [7, 8, 9, 10]])
    b = torch.tensor([[3, 4, 5, 11], [12, 8, 9, 10]])
    with torch.no_grad():
        ya, yb, y0 = connector(x, a), connector(x, b), connector(x)
        assert ya.shape == y0.shape == (2, 5, D)
        for row in range(2):  # each row's output depends on its own instruction
            assert not torch.allclose(ya[row], yb[row])
        assert not torch.allclose(ya, y0)
        # Row 0 with 2 real tokens, right- vs left-padded: same result (positions skip padding).
        right = connector(x[:1], torch.tensor([[3, 4, 0, 0]]), torch.tensor([[1, 1, 0, 0]]))
        left = connector(x[:1], torch.tensor([[0, 0, 3, 4]]), torch.tensor([[0, 0, 1, 1]]))
        short = connector(x[:1], torch.tensor([[3, 4]]))
        torch.testing.assert_close(right, short)
        torch.testing.assert_close(left, short)


def test_qformer_without_text_input_takes_no_text():
    connector = _build(QF)
    assert not connector.accepts_text
    assert connector.qformer.embeddings.word_embeddings is None
    assert not any(
        "word_embeddings" in n or ".intermediate." in n for n, _ in connector.named_parameters()
    )
    with pytest.raises(TypeError, match="takes no text"):
        connector(torch.randn(1, N, DV), torch.tensor([[1, 2]]))
    x = torch.randn(3, N, DV)
    with torch.no_grad():  # rows are independent: a query-only Q-Former sees only its image
        torch.testing.assert_close(connector(x)[1:2], connector(x[1:2]))
    with pytest.raises(ConfigError, match="vocab_size"):
        build_connector(QF_TEXT, DV, D, N)


def test_qformer_truncates_long_instructions():
    connector = _build(QF_TEXT + ",max_text_tokens=4")
    x = torch.randn(1, N, DV)
    with torch.no_grad():
        long = connector(x, torch.tensor([[3, 4, 5, 6, 7, 8]]))
        cut = connector(x, torch.tensor([[3, 4, 5, 6]]))
    torch.testing.assert_close(long, cut)


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize("spec", list(TINY))
def test_gradients_reach_every_parameter(spec):
    connector = _build(spec).train()
    x = torch.randn(2, N, DV, requires_grad=True)
    if connector.accepts_text:
        y = connector(x, torch.tensor([[3, 4, 5], [6, 7, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]]))
    else:
        y = connector(x)
    (y.square().mean()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    missing = sorted(
        n for n, p in connector.named_parameters() if p.grad is None or not p.grad.any()
    )
    if connector.accepts_text:  # the last layer's text feed-forward cannot reach query outputs
        last = len(connector.qformer.encoder.layer) - 1
        assert missing == sorted(
            n
            for n, _ in connector.named_parameters()
            if n.startswith(f"qformer.encoder.layer.{last}.intermediate.")
            or n.startswith(f"qformer.encoder.layer.{last}.output.")
        )
    else:
        assert missing == []


@pytest.mark.parametrize("spec", ["mlp2x_gelu", "pool:grid=2", RS, QF_TEXT])
def test_seeded_builds_and_resets(spec):
    state_before = torch.get_rng_state()
    a, b, c = _build(spec, seed=5), _build(spec, seed=5), _build(spec, seed=6)
    assert torch.equal(torch.get_rng_state(), state_before)  # the caller's RNG is untouched
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    reset_connector(c, 5)  # reset to seed 5 == built with seed 5
    assert all(torch.equal(sa[k], c.state_dict()[k]) for k in sa)
