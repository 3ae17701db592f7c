"""SEA (Supervised Embedding Alignment): the token-level objective, the word
labels a CLIP pair gives each image patch (builder and on-disk cache), and the recalled-word
diagnostic of its Figure 1."""

from modalign.methods.sea.label_cache import LabelCache, load_words, words_fingerprint
from modalign.methods.sea.labels import (
    FAMILIES,
    PairFamily,
    build_label_cache,
    patch_labels,
    region_labels,
    save_label_cache,
    word_features,
)
from modalign.methods.sea.objective import SEAObjective, word_token_ids
from modalign.methods.sea.recall import plot_recall, recalled_words, vision_tokens, word_embeddings

__all__ = [
    "FAMILIES",
    "LabelCache",
    "PairFamily",
    "SEAObjective",
    "build_label_cache",
    "load_words",
    "patch_labels",
    "plot_recall",
    "recalled_words",
    "region_labels",
    "save_label_cache",
    "vision_tokens",
    "word_embeddings",
    "word_features",
    "word_token_ids",
    "words_fingerprint",
]
