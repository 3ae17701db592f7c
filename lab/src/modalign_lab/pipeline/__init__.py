"""The lab's LLaVA stages and the full cycle (pre-train -> MIR -> SFT -> evaluation), SEA labels
for the world, and the rebuild of the shipped default."""
