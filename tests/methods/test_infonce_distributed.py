"""The shared InfoNCE across two gloo processes, each with part of the batch, equals one process on
the concatenated batch: the InfoNCE itself (uneven parts, keys shared across processes, extra
negatives, local_loss), SEA's and the contrastive objective's losses on the tiny LLaVA, and the
lab's NegCLIP. Gradients are compared as DDP would see them: each process's own rows' gradient
divided by the number of processes, parameter gradients averaged over processes."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2
CAPTIONS = ["a red circle", "two blue squares at the top", "a green star", "the glyph 7"]
SPLIT = [slice(0, 3), slice(3, 5)]  # uneven parts of the InfoNCE batch
EXTRA_SPLIT = [slice(0, 1), slice(1, 3)]
KEYS = torch.tensor([0, 1, 2, 1, 3])  # key 1 on both processes


# ---------------------------------------------------------------- the InfoNCE itself
def _features():
    g = torch.Generator().manual_seed(7)
    a, b = torch.randn(5, 6, generator=g, dtype=torch.float64), torch.randn(5, 6, generator=g,
                                                                            dtype=torch.float64)  # fmt: skip
    return a, b, torch.randn(3, 6, generator=g, dtype=torch.float64)


def _infonce_case(rows: slice, extra_rows: slice, local_loss: bool) -> dict:
    from modalign.methods.objectives import symmetric_infonce

    a, b, e = (t[r].clone().requires_grad_(True) for t, r in zip(_features(), (rows, rows, extra_rows),
                                                                 strict=True))  # fmt: skip
    s = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    loss = symmetric_infonce(a, b, s, extra_b=e, keys=KEYS[rows], local_loss=local_loss)
    loss.backward()
    return {"loss": loss.detach(), "a": a.grad, "b": b.grad, "e": e.grad, "s": s.grad}


# ---------------------------------------------------------------- SEA and contrastive
def _tiny(llava: Path):
    """The tiny LLaVA with only its connector training, and its tokens for 4 seeded images."""
    from modalign_lab.towers.llava import load_llava

    model, proc = load_llava(llava)
    for p in model.parameters():
        p.requires_grad_(False)
    connector = model.model.multi_modal_projector
    for p in connector.parameters():
        p.requires_grad_(True)
    vision = torch.randn(4, 16, 16, generator=torch.Generator().manual_seed(0))
    return model, proc, connector(vision)  # tokens (4, 16, D)


def _run(model, obj, tokens: torch.Tensor, extras: dict) -> dict[str, torch.Tensor]:
    """The objective's loss on these images' tokens, backward; the loss and what trains' grads."""
    from modalign.methods.objectives import ForwardContext

    mask = torch.ones(tokens.shape[:2], dtype=torch.bool)
    loss = obj(ForwardContext(model, {}, None, tokens, mask, extras))[obj.name]
    loss.backward()
    named = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return {"loss": loss.detach(), "logit_scale": obj.logit_scale.grad, **named}


def _sea_case(llava: Path, cache: Path, data: Path, images: list[int]) -> dict:
    """Window 1 and one label per labelled patch, distinct over the 4 images: every process draws
    exactly its images' pairs, so the pairs of the parts are those of the whole."""
    from modalign_lab.world.dataset import load_split

    from modalign.methods.sea.objective import SEAObjective

    model, proc, tokens = _tiny(llava)
    obj = SEAObjective(labels=str(cache), window=1, logit_scale=1.0)
    paths = [str(r.image_path) for r in load_split(data, "train", 4)]
    for k, path in enumerate(paths):
        idx, scores = torch.full((16, 3), -1, dtype=torch.int32), torch.zeros(16, 3)
        idx[0, 0], idx[5, 0] = 2 * k, 2 * k + 1
        scores[0, 0], scores[5, 0] = 1.0, 1.0
        key = obj.cache.image_id(path)
        obj.cache.indices[key], obj.cache.scores[key] = idx, scores
    obj.setup(model, proc)
    return _run(model, obj, tokens[images], {"image_paths": [paths[i] for i in images]})


def _contrastive_case(llava: Path, images: list[int]) -> dict:
    from modalign.methods.contrastive.objective import JointContrastiveObjective

    model, proc, tokens = _tiny(llava)
    obj = JointContrastiveObjective()
    obj.setup(model, proc)
    return _run(model, obj, tokens[images], {"captions": [CAPTIONS[i] for i in images]})


# ---------------------------------------------------------------- the lab's NegCLIP
def _negclip_case(images: list[int]) -> dict:
    """As CLIPModel computes them: projected features (the leaves here) made unit-norm, then
    logits_per_text = (T I^T) exp(t), logits_per_image its transpose."""
    from modalign_lab.towers.clip_loss import negclip_loss

    g = torch.Generator().manual_seed(9)
    img, pos, neg = (torch.randn(4, 8, generator=g, dtype=torch.float64)[images].requires_grad_(True)
                     for _ in "ipn")  # fmt: skip
    log_scale = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    image = torch.nn.functional.normalize(img, dim=-1)
    text = torch.nn.functional.normalize(torch.cat([pos, neg]), dim=-1)  # (B + N, D): pos, neg
    per_text = text @ image.T * log_scale.exp()
    out = SimpleNamespace(image_embeds=image, text_embeds=text, logits_per_text=per_text,
                          logits_per_image=per_text.T)  # fmt: skip
    loss = negclip_loss(out, torch.arange(len(images)), logit_scale=log_scale)
    loss.backward()
    return {"loss": loss.detach(), "img": img.grad, "pos": pos.grad, "neg": neg.grad,
            "logit_scale": log_scale.grad}  # fmt: skip


# ---------------------------------------------------------------- the two processes
def _average_parameter_grads(result: dict, keys: list[str]) -> dict:
    """DDP's reduction of replicated parameters' gradients: the mean over processes."""
    for k in keys:
        dist.all_reduce(result[k])
        result[k] /= WORLD
    return result


def _worker(rank: int, init: str, out: str, llava: str, cache: str, data: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        images = [2 * rank, 2 * rank + 1]
        results = {
            f"infonce_{mode}": _average_parameter_grads(
                _infonce_case(SPLIT[rank], EXTRA_SPLIT[rank], mode == "local"), ["s"]
            )
            for mode in ("global", "local")
        }
        sea = _sea_case(Path(llava), Path(cache), Path(data), images)
        results["sea"] = _average_parameter_grads(sea, [k for k in sea if k != "loss"])
        con = _contrastive_case(Path(llava), images)
        results["contrastive"] = _average_parameter_grads(con, [k for k in con if k != "loss"])
        results["negclip"] = _average_parameter_grads(_negclip_case(images), ["logit_scale"])
        torch.save(results, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(tiny_llava, tiny_towers, tiny_data, tmp_path_factory):
    from modalign_lab.towers.llava import build_image_processor
    from modalign_lab.towers.train import load_tokenizer
    from modalign_lab.world.dataset import load_split
    from transformers import CLIPModel

    from modalign.methods.sea.labels import build_label_cache

    tmp = tmp_path_factory.mktemp("infonce_dist")
    clip = CLIPModel.from_pretrained(tiny_towers[0] / "model").eval()
    words = ["red", "green", "blue", "circle", "square", "star", "triangle", "small", "large"]
    images = [(r.image_path.relative_to(tiny_data).as_posix(), r.load_image)
              for r in load_split(tiny_data, "train", 4)]  # fmt: skip
    build_label_cache(clip, load_tokenizer(tiny_data), build_image_processor(64), words, images,
                      tmp / "cache", image_root=tiny_data, top_n=3, progress=False)  # fmt: skip
    out = str(tmp / "res")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(f"file://{tmp / 'rendezvous'}", out, str(tiny_llava), str(tmp / "cache"),
                            str(tiny_data)), nprocs=WORLD, join=True)  # fmt: skip
    results = [torch.load(f"{out}.{r}") for r in range(WORLD)]
    return results, tmp / "cache"


pytestmark = [
    pytest.mark.slow,  # two processes importing transformers: ~15 s on 2 cores
    pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available"),
    pytest.mark.skipif(sys.platform == "win32", reason="gloo file init on POSIX only"),
]


@pytest.mark.parametrize("mode", ["global", "local"])
def test_infonce_parts_equal_the_whole(two_processes, mode):
    ranks, _ = two_processes
    whole = _infonce_case(slice(0, 5), slice(0, 3), local_loss=False)
    losses = [r[f"infonce_{mode}"]["loss"] for r in ranks]
    if mode == "global":  # every process holds the whole batch's loss
        assert all(float(x) == pytest.approx(float(whole["loss"]), rel=1e-12) for x in losses)
    else:  # each process its own rows, weighted so the mean is the whole batch's loss
        assert float(losses[0]) != pytest.approx(float(losses[1]), rel=1e-3)
        assert float(sum(losses)) / WORLD == pytest.approx(float(whole["loss"]), rel=1e-12)
    for k in ("a", "b", "e"):  # the parts are contiguous: rank order is row order
        got = torch.cat([r[f"infonce_{mode}"][k] for r in ranks]) / WORLD
        torch.testing.assert_close(got, whole[k], rtol=1e-10, atol=1e-12)
    for r in ranks:
        torch.testing.assert_close(r[f"infonce_{mode}"]["s"], whole["s"], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["sea", "contrastive"])
def test_objective_on_two_halves_equals_one_process_on_the_batch(two_processes, tiny_llava,
                                                                 tiny_data, name):  # fmt: skip
    ranks, cache = two_processes
    case = _sea_case if name == "sea" else _contrastive_case
    args = (tiny_llava, cache, tiny_data) if name == "sea" else (tiny_llava,)
    whole = case(*args, [0, 1, 2, 3])
    for r in ranks:
        assert float(r[name]["loss"]) == pytest.approx(float(whole["loss"]), rel=1e-6)
        assert r[name].keys() == whole.keys()
        for k in whole:
            if k != "loss":
                torch.testing.assert_close(r[name][k], whole[k], rtol=1e-4, atol=1e-6)
    assert whole["logit_scale"].abs() > 0 and all(
        whole[k].abs().sum() > 0 for k in whole if k not in ("loss", "logit_scale")
    )
    # Each process alone (no gather) would score a different loss: the gather is what matches.
    alone = [float(case(*args, half)["loss"]) for half in ([0, 1], [2, 3])]
    assert sum(alone) / WORLD != pytest.approx(float(whole["loss"]), rel=1e-3)


def test_lab_negclip_gathers_images_captions_and_negatives(two_processes):
    ranks, _ = two_processes
    whole = _negclip_case([0, 1, 2, 3])  # one process: the logits CLIPModel computed
    for r in ranks:
        assert float(r["negclip"]["loss"]) == pytest.approx(float(whole["loss"]), rel=1e-12)
        torch.testing.assert_close(r["negclip"]["logit_scale"], whole["logit_scale"])
    for k in ("img", "pos", "neg"):
        got = torch.cat([r["negclip"][k] for r in ranks]) / WORLD
        torch.testing.assert_close(got, whole[k], rtol=1e-10, atol=1e-12)
    # Each process alone (no gather) would score a different loss: the gather is what matches.
    alone = [float(_negclip_case(half)["loss"]) for half in ([0, 1], [2, 3])]
    assert sum(alone) / WORLD != pytest.approx(float(whole["loss"]), rel=1e-3)
