"""The tiny models of every family (shared with tests/models)."""

from tests.models.conftest import tiny_adapter, tiny_dir  # noqa: F401  (fixtures)
