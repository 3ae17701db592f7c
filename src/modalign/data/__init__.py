"""Data in the formats users have: image/text pairs (folders, JSONL/CSV, HF datasets, text files)
for measuring, LLaVA conversation JSON + image folder for training."""

from modalign.data.conversations import (
    Conversation,
    ConversationDataset,
    Sample,
    load_conversations,
    write_conversations,
)
from modalign.data.hf import load_hf_dataset
from modalign.data.images import ImageItem, as_rgb, load_images, open_rgb, scan_images
from modalign.data.pairs import Pair
from modalign.data.pairs_file import load_pairs
from modalign.data.refs import LazyPairs, PairRef
from modalign.data.sampling import sample_pairs, sample_refs, seeded_order
from modalign.data.source import SampleSource, sample_ids
from modalign.data.texts import TextItem, load_texts

__all__ = [
    "Conversation",
    "ConversationDataset",
    "ImageItem",
    "LazyPairs",
    "Pair",
    "PairRef",
    "Sample",
    "SampleSource",
    "TextItem",
    "as_rgb",
    "load_conversations",
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
    "write_conversations",
]
