"""Every parser of a user file or string, fed random input: the only outcomes allowed are success
or a `ModalignError` (one line, exit 2 on the command line), never another exception.

Each property runs `EXAMPLES` generated inputs (hypothesis; seeded by the test's name, so a
failure reproduces); docs/reliability.md lists what is tried.
"""

from __future__ import annotations

import io
import json
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modalign.errors import ModalignError

EXAMPLES = 120
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# JSON-like values, nested: what a hand-edited or damaged JSON file can hold
scalars = st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# keys the parsers look for, so generated records get past the first check
conversation = st.fixed_dictionaries(
    {},
    optional={
        "id": scalars,
        "image": st.sampled_from(["a.png", "", "missing.png", "../a.png"]) | scalars,
        "conversations": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "from": st.sampled_from(["human", "gpt", "user", "assistant", "bot"]) | scalars,
                    "value": st.sampled_from(["<image>\nq", "<image><image>", "a", "", "x <image>"])
                    | scalars,
                },
            )
            | scalars,
            max_size=5,
        )
        | scalars,
    },
)
text_or_bytes = st.binary(max_size=300) | st.text(max_size=300).map(lambda s: s.encode("utf-8"))


def _expect_clean(fn, *args, **kwargs):
    """Run `fn`; a ModalignError is a clean refusal, anything else escapes and fails the test."""
    try:
        return fn(*args, **kwargs)
    except ModalignError:
        return None


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("fuzz")
    Image.new("RGB", (6, 6), (200, 10, 10)).save(root / "a.png")
    return root


@FUZZ
@given(content=text_or_bytes, suffix=st.sampled_from([".txt", ".jsonl"]))
def test_passage_files(folder, content, suffix):
    from modalign.data import load_texts

    path = folder / f"passages{suffix}"
    path.write_bytes(content)
    _expect_clean(load_texts, path)


@FUZZ
@given(
    content=text_or_bytes
    | st.lists(json_values, max_size=4).map(lambda rows: "\n".join(map(json.dumps, rows)).encode()),
    suffix=st.sampled_from([".jsonl", ".csv"]),
)
def test_pairs_files(folder, content, suffix):
    from modalign.data import load_pairs

    path = folder / f"pairs{suffix}"
    path.write_bytes(content)
    refs = _expect_clean(load_pairs, path)
    for ref in refs or []:
        _expect_clean(ref.load)


@FUZZ
@given(
    records=st.lists(conversation | json_values, max_size=4) | json_values,
    layout=st.sampled_from(["json", "jsonl", "bytes"]),
    junk=st.binary(max_size=60),
)
def test_llava_conversation_files(folder, records, layout, junk):
    from modalign.data import load_conversations

    path = folder / ("conv.jsonl" if layout == "jsonl" else "conv.json")
    if layout == "json":
        path.write_text(json.dumps(records))
    elif layout == "jsonl" and isinstance(records, list):
        path.write_text("\n".join(json.dumps(r) for r in records))
    else:
        path.write_bytes(junk)
    for require_image in (True, False):
        convs = _expect_clean(load_conversations, path, folder, require_image=require_image)
        if convs:
            from modalign.data.conversations import check_images, data_identity

            _expect_clean(check_images, convs, progress=False)
            data_identity(convs)


@FUZZ
@given(data=json_values | st.fixed_dictionaries(
    {"mir": scalars, "per_layer": st.lists(scalars, max_size=3), "layers": st.lists(scalars, max_size=3)},
    optional={"settings": json_values, "alpha": json_values, "n_vision": json_values},
))  # fmt: skip
def test_run_json_for_compare(folder, data):
    from modalign.metrics import MIRResult
    from modalign.report import compare_table

    path = folder / "run.json"
    path.write_text(json.dumps(data))
    run = _expect_clean(MIRResult.load, str(path))
    if run is not None:
        _expect_clean(compare_table, [run, run], ["a", "b"])


@FUZZ
@given(lines=st.lists(json_values.map(json.dumps) | st.text(max_size=30), max_size=5))
def test_validate_checkpoint_lists(folder, lines):
    from modalign.evidence.checkpoints import check_checkpoints, read_checkpoints

    path = folder / "checkpoints.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    found = _expect_clean(read_checkpoints, path)
    if found:
        _expect_clean(check_checkpoints, found)


spec_text = st.text(alphabet=string.printable, max_size=40) | st.builds(
    lambda name, arg, opts: name + (f":{arg}" if arg else "") + "".join(f",{k}={v}" for k, v in opts),
    st.sampled_from(["linear", "mlp2x_gelu", "mlp0x_gelu", "qformer", "pool", "sea", "mfid",
                     "contrastive", "first", "from", "full", "frozen", "lora", "x"]),
    st.sampled_from(["", "1", "-3", "0.5", "abc", "num_queries=4", "grid=0", "="]),
    st.lists(st.tuples(st.sampled_from(["num_queries", "grid", "window", "labels", "text_input",
                                        "prompt", "", "k"]),
                       st.sampled_from(["1", "0", "-1", "x", "none", "true", "2.5", ""])),
             max_size=3),
)  # fmt: skip


@FUZZ
@given(text=spec_text)
def test_connector_objective_and_unlock_specs(text):
    from modalign.methods import ConnectorSpec, ObjectiveSpec
    from modalign.train import UnlockSpec

    _expect_clean(ConnectorSpec.parse, text)
    _expect_clean(ObjectiveSpec.parse, text)
    for component in ("llm", "vision", "connector"):
        _expect_clean(UnlockSpec, **{component: text})


@FUZZ
@given(content=st.binary(max_size=400), header=st.sampled_from(
    [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"RIFF\x00\x00\x00\x00WEBP"]
))  # fmt: skip
def test_images_as_random_bytes(folder, content, header):
    from modalign.data import open_rgb
    from modalign.data.images import verify_image

    data = header + content
    _expect_clean(open_rgb, io.BytesIO(data))
    path = folder / "random.png"
    path.write_bytes(data)
    assert verify_image(path) is None or isinstance(verify_image(path), str)
    _expect_clean(open_rgb, path)


@FUZZ
@given(data=json_values | st.dictionaries(
    st.sampled_from(["inputs", "stage", "train", "monitor", "connector", "moca", "epochs", "x"]),
    json_values, max_size=4,
), suffix=st.sampled_from([".json", ".yaml"]))  # fmt: skip
def test_training_config_files(folder, data, suffix):
    import argparse

    from modalign.cli.recipe_options import read_config, recipe_from_options
    from modalign.train import Recipe

    path = folder / f"config{suffix}"
    path.write_text(json.dumps(data))  # JSON is YAML too
    args = argparse.Namespace(config=path)
    config = _expect_clean(read_config, args, ("inputs",))
    if config is not None:
        _expect_clean(recipe_from_options, args, Recipe.defaults("pretrain"), config, given={})


# an lmms-eval results file: the keys its reader looks for, with damaged values
task_entry = st.dictionaries(
    st.sampled_from(["alias", "samples", " ", "exact_match,none", "exact_match_stderr,none",
                     "acc,flexible-extract", "score", ","]) | st.text(max_size=8),
    st.floats(-10, 2000) | scalars, max_size=5,
)  # fmt: skip
model_args = st.sampled_from(
    [
        "pretrained=a",
        "pretrained=b,x={'k': [1,2]}",
        "pretrained=",
        "pretrained='c,d'",
        "x=1",
        ",,=",
        "pretrained=a,pretrained=b",
    ]
)
lmms_results = st.fixed_dictionaries(
    {
        "results": st.dictionaries(st.sampled_from(["mme", "pope", "x"]), task_entry,
                                   max_size=3),
        "config": st.fixed_dictionaries({"model_args": model_args}),
    },
    optional={
        "configs": st.dictionaries(st.sampled_from(["mme", "pope"]), st.fixed_dictionaries({}, optional={
            "metric_list": st.lists(st.fixed_dictionaries({}, optional={"metric": scalars})
                                    | scalars, max_size=2) | scalars,
            "filter_list": st.lists(st.fixed_dictionaries({}, optional={"name": scalars})
                                    | scalars, max_size=2) | scalars}) | scalars, max_size=2),
        "higher_is_better": st.dictionaries(st.sampled_from(["mme", "pope"]), json_values,
                                            max_size=2) | scalars,
    },
)  # fmt: skip


@FUZZ
@given(files=st.lists(lmms_results | json_values, min_size=1, max_size=4),
       junk=st.binary(max_size=40), metric=st.sampled_from([(), ("exact_match",),
       ("mme=exact_match,none",), ("score",)]))  # fmt: skip
def test_lmms_eval_results_files(folder, files, junk, metric):
    from modalign.evidence.lmms_results import find_eval_results
    from modalign.evidence.lmms_scores import LmmsEvalScores, lmms_eval_scores

    root = folder / "lmms_out"
    if root.exists():
        for old in root.rglob("*_results.json"):
            old.unlink()
    for k, data in enumerate(files):
        (root / f"m{k}").mkdir(parents=True, exist_ok=True)
        text = json.dumps(data).encode() if k or not junk else junk
        (root / f"m{k}" / f"20250101_00000{k}_results.json").write_bytes(text)
    found = _expect_clean(find_eval_results, root)
    selection = _expect_clean(LmmsEvalScores, scores_from=root, metric=metric)
    if found and selection is not None:
        results, _ = found
        for r in results:
            for task in r.tasks():
                r.primary(task)
        _expect_clean(lmms_eval_scores, results, selection)
        _expect_clean(lmms_eval_scores, results, selection, ["a", "b", "c"])
