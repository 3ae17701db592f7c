"""Evaluation samples: image/text pairs from folders, JSONL/CSV, HF datasets and text files."""

from modalign.data.hf import load_hf_dataset
from modalign.data.images import ImageItem, load_images, open_rgb, scan_images
from modalign.data.pairs import Pair
from modalign.data.pairs_file import load_pairs
from modalign.data.refs import LazyPairs, PairRef
from modalign.data.sampling import sample_pairs, sample_refs, seeded_order
from modalign.data.source import SampleSource, sample_ids
from modalign.data.texts import TextItem, load_texts

__all__ = [
    "ImageItem",
    "LazyPairs",
    "Pair",
    "PairRef",
    "SampleSource",
    "TextItem",
    "load_hf_dataset",
    "load_images",
    "load_pairs",
    "load_texts",
    "open_rgb",
    "sample_ids",
    "sample_pairs",
    "sample_refs",
    "scan_images",
    "seeded_order",
]
