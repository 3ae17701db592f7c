"""`modalign lab ...`, registered with the modalign CLI through the `modalign.commands` entry
point (this module stays light: the CLI reads it to list the command)."""

from modalign.cli import Command

COMMAND = Command(
    "modalign_lab.cli", "miniature LVLM world: data, tiny models, training, evaluation"
)
