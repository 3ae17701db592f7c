"""SA-Perceiver: shapes, identity at init, locality (by gradient), attention vs a loop reference."""

from __future__ import annotations

import math

import pytest
import torch

from modalign.errors import ConfigError, ModelError
from modalign.methods.connectors import build_connector
from modalign.methods.vlsa.sa_perceiver import SAPerceiverConnector

DV, D, G = 8, 6, 3  # vision width, LLM width, low-res grid side (N = 9)


def _connector(options: str = "", rows: int = 2, cols: int = 2, seed: int = 0):
    spec = f"sa_perceiver:num_heads=2,grid_rows={rows},grid_cols={cols}" + options
    module = build_connector(spec, DV, D, G * G, seed=seed).double()
    for out in (module.cross_out, module.self_out):  # make the attention branches count
        torch.nn.init.normal_(out.weight, std=0.5)
        torch.nn.init.normal_(out.bias, std=0.1)
    return module


def _features(images: int, rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (images * (1 + rows * cols), G * G, DV)
    return torch.randn(shape, generator=g, dtype=torch.float64)


def test_output_is_n_image_tokens_plus_a_global_token():
    module = build_connector("sa_perceiver:num_heads=2", DV, D, G * G, seed=0)
    assert module.num_output_tokens(G * G) == G * G + 1
    assert module.view_grid == (2, 2)
    out = module(_features(3, 2, 2).float())
    assert out.shape == (3, G * G + 1, D)


def test_fresh_perceiver_passes_the_low_res_tokens_through():
    module = build_connector("sa_perceiver:num_heads=2,grid_cols=3", DV, D, G * G, seed=1)
    features = _features(2, 2, 3).float()
    perceived = module.perceive(features)  # (I, N+1, Dv)
    low = features.reshape(2, 7, G * G, DV)[:, 0]
    assert torch.equal(perceived[:, : G * G], low)
    assert torch.equal(perceived[:, G * G], module.query.expand(2, DV))
    assert torch.allclose(module(features)[:, : G * G], module.projector(low), atol=1e-6)


def _cell(i: int, j: int, rows: int, cols: int) -> set[tuple[int, int, int]]:
    """(tile, patch row, patch col) of the high-res tokens inside low-res cell (i, j)."""
    out = set()
    for sr in range(rows * i, rows * i + rows):  # stitched rows / cols of the cell
        for sc in range(cols * j, cols * j + cols):
            tile = (sr // G) * cols + sc // G
            out.add((tile, sr % G, sc % G))
    return out


@pytest.mark.parametrize(("rows", "cols"), [(2, 2), (1, 3), (3, 2)])
def test_local_scope_sees_only_its_own_cell(rows, cols):
    module = _connector(",scope=local", rows, cols)
    features = _features(1, rows, cols).requires_grad_(True)
    out = module.perceive(features)  # (1, N+1, Dv) before self-attention mixes tokens
    for token in range(G * G):
        i, j = divmod(token, G)
        # The cross-attention result alone (eq. 1), read through the perceiver's own parts:
        lo = torch.cat([features[:1], module.query.unsqueeze(0).double()], dim=1)
        high = features[1:].reshape(1, rows * cols, G * G, DV)
        cross = module._cross(lo, high)[0, token].sum()
        (grad,) = torch.autograd.grad(cross, features, retain_graph=True)
        hi = grad[1:].reshape(rows * cols, G, G, DV).abs().sum(-1)  # (tiles, g, g)
        seen = {tuple(int(v) for v in idx) for idx in torch.nonzero(hi > 0)}
        assert seen == _cell(i, j, rows, cols), (token, rows, cols)
    # The global query sees every high-res token; so does everything after self-attention.
    (grad,) = torch.autograd.grad(out[0, G * G].sum(), features, retain_graph=True)
    assert (grad[1:].abs().sum(-1) > 0).all()


def test_global_scope_sees_every_tile():
    module = _connector(",scope=global")
    features = _features(1, 2, 2).requires_grad_(True)
    lo = torch.cat([features[:1], module.query.unsqueeze(0).double()], dim=1)
    cross = module._cross(lo, features[1:].reshape(1, 4, G * G, DV))[0, 0].sum()
    (grad,) = torch.autograd.grad(cross, features)
    assert (grad[1:].abs().sum(-1) > 0).all()


def _reference(module: SAPerceiverConnector, features: torch.Tensor, rows: int, cols: int):
    """Loop-by-loop float64 transcription of eq. 1 and eq. 2 (softmax or literal SiLU)."""
    heads, literal = 2, module.options.attention == "silu_literal"
    dh = DV // heads
    x = features.reshape(-1, 1 + rows * cols, G, G, DV)
    out = []
    for img in x:
        tokens = [img[0, r, c] for r in range(G) for c in range(G)] + [module.query[0].double()]
        keys = {}
        for t in range(rows * cols):
            for r in range(G):
                for c in range(G):
                    keys[(t, r, c)] = img[1 + t, r, c]
        lin = lambda m, v: m(v)  # noqa: E731
        norm_lo, norm_hi = module.norm_lo, module.norm_hi
        updated = []
        for n, tok in enumerate(tokens):
            cell = _cell(*divmod(n, G), rows, cols) if n < G * G else set(keys)
            if module.options.scope == "global":
                cell = set(keys)
            ks = [keys[c] for c in sorted(cell)]
            q = lin(module.cross_q, norm_lo(tok))
            k = [lin(module.cross_k, norm_hi(v)) for v in ks]
            vmod = module.cross_v if module.cross_v is not None else module.cross_k
            v = [lin(vmod, norm_hi(v)) for v in ks]
            mixed = []
            for h in range(heads):
                sl = slice(h * dh, (h + 1) * dh)
                s = torch.stack([q[sl] @ kk[sl] for kk in k])
                w = (
                    torch.nn.functional.silu(s) / len(k)
                    if literal
                    else torch.softmax(s / math.sqrt(dh), 0)
                )
                mixed.append(sum(wi * vv[sl] for wi, vv in zip(w, v, strict=True)))
            updated.append(module.cross_out(torch.cat(mixed)) + tok)
        ys = [module.norm_self(u) for u in updated]
        final = []
        for u, y in zip(updated, ys, strict=True):
            q = module.self_q(y)
            mixed = []
            for h in range(heads):
                sl = slice(h * dh, (h + 1) * dh)
                s = torch.stack([q[sl] @ module.self_k(yy)[sl] for yy in ys])
                w = (
                    torch.nn.functional.silu(s) / len(ys)
                    if literal
                    else torch.softmax(s / math.sqrt(dh), 0)
                )
                mixed.append(sum(wi * module.self_v(yy)[sl] for wi, yy in zip(w, ys, strict=True)))
            final.append(module.self_out(torch.cat(mixed)) + u)
        out.append(torch.stack(final))
    return torch.stack(out)


@pytest.mark.parametrize(
    ("options", "cols"),
    [("", 2), (",scope=global", 2), (",attention=silu_literal,kv=shared", 2), (",norm=none", 3)],
)
def test_attention_matches_a_loop_reference(options, cols):
    module = _connector(options, 2, cols)
    features = _features(2, 2, cols, seed=4)
    with torch.no_grad():
        got = module.perceive(features)
        want = _reference(module, features, 2, cols)
    assert torch.allclose(got, want, atol=1e-12, rtol=1e-10)


def test_gradients_reach_the_perceiver_and_the_query():
    module = _connector()
    module(_features(2, 2, 2)).square().sum().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_settings_and_inputs_are_clear_errors():
    with pytest.raises(ConfigError, match="square patch grid"):
        build_connector("sa_perceiver:num_heads=2", DV, D, 10)
    with pytest.raises(ConfigError, match="does not divide"):
        build_connector("sa_perceiver:num_heads=3", DV, D, 9)
    with pytest.raises(ConfigError, match="changes the token count"):
        build_connector("sa_perceiver:num_heads=2,projector=qformer", DV, D, 9)
    with pytest.raises(ConfigError, match="changes the token count"):
        build_connector("sa_perceiver:num_heads=2,projector=resampler", DV, D, 9)
    with pytest.raises(ConfigError, match="more than 64"):
        build_connector("sa_perceiver:grid_rows=9,grid_cols=9", DV, D, 9)
    module = build_connector("sa_perceiver:num_heads=2", DV, D, 9)
    with pytest.raises(ModelError, match="5 views"):
        module(torch.zeros(7, 9, DV))


def test_real_size_shapes_on_meta():
    """VLSA's sizes (CLIP-L/336: 576 x 1024 per view, 2 x 2 tiles -> 4096), built on `meta`."""
    with torch.device("meta"):
        connector = build_connector("sa_perceiver", 1024, 4096, 576)
        y = connector(torch.empty(2 * 5, 576, 1024))
    attn = 8 * (1024 * 1024 + 1024)  # cross q, k, v, out and self q, k, v, out
    norms = 3 * 2 * 1024
    mlp = 1024 * 4096 + 4096 + 4096 * 4096 + 4096
    assert sum(p.numel() for p in connector.parameters()) == 1024 + norms + attn + mlp
    assert y.shape == (2, 577, 4096) == (2, connector.num_output_tokens(576), 4096)
