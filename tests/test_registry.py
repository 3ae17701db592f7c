"""The one registry helper: refusals, clear unknown-name errors, registries full on import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from modalign.errors import ConfigError
from modalign.registry import Registry


def test_register_lookup_and_refusals():
    things: Registry[int] = Registry("thing")
    things.register("a", "b")(1)
    assert things["a"] == things["b"] == 1 and "a" in things and "z" not in things
    assert things.names() == ["a", "b"] and len(things) == 2 and things.get("z") is None
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        things.register("a")(2)
    with pytest.raises(ConfigError, match="unknown thing 'z'; choose one of: a, b"):
        things["z"]


def test_registries_are_complete_once_their_package_is_imported():
    code = (
        "from modalign.models import ADAPTERS\n"
        "from modalign.metrics import SQRT_BACKENDS\n"
        "from modalign.methods.connectors import CONNECTORS\n"
        "from modalign.methods.objectives import OBJECTIVES\n"
        "from modalign.models.surgery.extensions import EXTENSIONS\n"
        "from modalign.cli import commands\n"
        "for r in (ADAPTERS, SQRT_BACKENDS, CONNECTORS, OBJECTIVES, EXTENSIONS):\n"
        "    print(r.kind, ','.join(r.names()))\n"
        "print('command', ','.join(commands()))  # built-in and entry-point commands\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    found = {kind: set(names.split(",")) for kind, names in
             (line.rsplit(" ", 1) for line in out.stdout.splitlines())}  # fmt: skip
    assert {"llava", "qwen2_vl", "gemma3", "modalign_llava"} <= found["model adapter"]
    assert found["trace-sqrt backend"] == {"exact", "newton_schulz", "scipy", "official"}
    assert {"linear", "mlp2x_gelu", "qformer", "resampler", "pool", "sa_perceiver"} <= found[
        "connector"
    ]
    assert "mfid" in found["objective"] and {"moca", "lora"} <= found["model extension"]
    assert {"mir", "train", "lab", "assemble"} <= found["command"]  # lab: the lab's entry point
