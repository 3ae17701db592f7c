"""Diagnostics of a trained model's alignment beyond MIR (e.g. SEA's recalled words)."""
