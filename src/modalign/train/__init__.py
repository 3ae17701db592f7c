"""Training recipes on `transformers.Trainer`: stages, unlock strategies per component, the MIR
monitor callback."""
