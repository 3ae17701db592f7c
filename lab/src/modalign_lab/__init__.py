"""The miniature LVLM world: synthetic data, tiny CLIP / LM / LLaVA, training stages, the default.

Submodules import torch/transformers lazily; importing this package has no side effects.
"""
