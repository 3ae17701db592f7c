"""VLSA ("Rethinking modality alignment"): high-resolution tiles with the SA-Perceiver (or every
tile's tokens), the reconstructive objective, and the cognition turns (pixel / VQ targets)."""

from modalign.methods.vlsa.cognition import (
    KINDS,
    CognitionTargets,
    insert_turn,
    parse_pixel_answer,
    parse_vq_answer,
    pixel_answer,
    pixel_grid,
    vq_answer,
)
from modalign.methods.vlsa.cognition_turns import CognitionSpec, cognition_dataset
from modalign.methods.vlsa.reconstruction import ReconstructionObjective, load_diffusion
from modalign.methods.vlsa.sa_perceiver import (
    SAPerceiverConnector,
    SAPerceiverOptions,
    cell_tokens,
    stitch_tiles,
)
from modalign.methods.vlsa.tiled import TiledConnector, TiledOptions
from modalign.methods.vlsa.tiling import (
    MAX_TILES,
    TileGrid,
    check_tile_count,
    fit_grid,
    pad_to_grid,
    split_views,
)
from modalign.methods.vlsa.vq_targets import VQCodeReader, codebook, vq_codes

__all__ = [
    "KINDS",
    "MAX_TILES",
    "CognitionSpec",
    "CognitionTargets",
    "ReconstructionObjective",
    "SAPerceiverConnector",
    "SAPerceiverOptions",
    "TileGrid",
    "TiledConnector",
    "TiledOptions",
    "VQCodeReader",
    "cell_tokens",
    "check_tile_count",
    "codebook",
    "cognition_dataset",
    "fit_grid",
    "insert_turn",
    "load_diffusion",
    "pad_to_grid",
    "parse_pixel_answer",
    "parse_vq_answer",
    "pixel_answer",
    "pixel_grid",
    "split_views",
    "stitch_tiles",
    "vq_answer",
    "vq_codes",
]
