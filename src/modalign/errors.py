"""The error contract: a `ModalignError` is the user's to fix (bad input, unsupported model, bad
option). The CLI prints it as one line and exits with status 2, having written nothing; any
other exception is a bug and keeps its traceback.

Every class subclasses ValueError, so library callers that catch ValueError keep working.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "MetricError", "ModalignError", "ModelError"]


class ModalignError(ValueError):
    """A problem with what the user gave us; the message says what and how to fix it."""


class ConfigError(ModalignError):
    """An option, flag or name that is invalid or inconsistent (unknown connector, N > layers...)."""


class DataError(ModalignError):
    """Input data that cannot be used: unreadable images, empty texts, malformed JSON or files."""


class ModelError(ModalignError):
    """A model that cannot be used as asked: no image tokens, unsupported family, wrong shapes."""


class MetricError(ModalignError):
    """A metric that is undefined on the given tokens: NaN/inf, too few tokens, a zero scale."""
