"""Evaluation samples: image/text pairs from folders, JSONL/CSV, HF datasets and text files."""

from modalign.data.pairs import Pair

__all__ = ["Pair"]
