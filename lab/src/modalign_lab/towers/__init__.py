"""Tiny towers trained on the world: tokenizer, CLIP, LM, the LLaVA assembled from them, and
the VLSA diffusion parts."""
