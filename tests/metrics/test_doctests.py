"""Every public function and class of `modalign.metrics` documents its arguments and return value
with a runnable example, and the examples run (doctest)."""

import doctest
import importlib
import inspect
import pkgutil

import pytest

import modalign.metrics as metrics

MODULES = sorted(m.name for m in pkgutil.iter_modules(metrics.__path__))
LOWER_IS_BETTER = (
    "MIRAccumulator",
    "compute_mir",
    "frechet_distance",
    "frechet_distance_tokens",
    "mmd2_unbiased",
    "kid",
    "centroid_gap",
    "layerwise",
    "baseline_report",
)


def _public():
    for name in metrics.__all__:
        obj = getattr(metrics, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            yield name, obj


@pytest.mark.parametrize("module", MODULES)
def test_examples_run(module):
    mod = importlib.import_module(f"modalign.metrics.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


@pytest.mark.parametrize(("name", "obj"), list(_public()), ids=lambda v: getattr(v, "__name__", v))
def test_public_api_is_documented_with_an_example(name, obj):
    doc = inspect.getdoc(obj) or ""
    assert ">>>" in doc, f"{name}: no runnable example"
    has_params = bool([p for p in inspect.signature(obj).parameters if p not in ("self", "cls")])
    if has_params:
        assert "Args" in doc, f"{name}: no Args section"
    if inspect.isfunction(obj) and inspect.signature(obj).return_annotation not in (None, "None"):
        assert "Returns" in doc, f"{name}: no Returns section"
    if name in LOWER_IS_BETTER:
        prose = " ".join(doc.lower().split())
        assert "lower is better" in prose, f"{name}: does not say that lower is better"
