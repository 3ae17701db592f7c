"""`modalign mir --model ...` glue (adapters + runner). Owned by the model-adapter work."""

from __future__ import annotations

import argparse

from modalign.cli import CLIError


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="Hugging Face model id or local path")


def run_model(args: argparse.Namespace) -> int:
    raise CLIError("give --tokens FILE (the --model path is not available in this build yet)")
