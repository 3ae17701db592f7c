"""modalign: measure (MIR) and improve (MoCa, SEA, VLSA...) cross-modal alignment in LVLMs.

Importing the package has no side effects; heavy modules (transformers, matplotlib) load lazily.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
