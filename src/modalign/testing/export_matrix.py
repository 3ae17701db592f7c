"""The export matrix: every connector x MoCa off/on x written form of a tiny LLaVA, loaded by a
process where modalign cannot be imported (`isolated_load`) and compared with what modalign's
own loader (`load_model`, `load_processor`) computes from the same folder.

    images = probe_images(work_dir / "images")
    cases = write_cases(llava_dir, out_root, images)  # save_model(format=...), or the refusal
    cells = measure(cases, images, work_dir)          # one subprocess loads every written folder
    print(markdown_table(cells))

Equal means `torch.equal` (bit for bit): both sides run the same operations on the same weights
in the same thread count, so any difference is a real one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from modalign.errors import ModelError
from modalign.methods.moca import attach_moca
from modalign.models.checkpoint import save_model
from modalign.models.export import CUSTOM_CODE, LLAVA
from modalign.models.loading import load_model, load_processor
from modalign.models.surgery.connector_llava import swap_connector

__all__ = [
    "CONNECTORS",
    "FORMATS",
    "Case",
    "Cell",
    "expected_outputs",
    "make_model",
    "markdown_table",
    "measure",
    "probe_images",
    "run_isolated",
    "run_probe",
    "write_cases",
]

# Matrix row -> connector spec sized for the tiny LLaVA (16 px images, 4 x 4 patches);
# "llava" is the model's own transformers projector, no connector swapped in.
CONNECTORS = {
    "llava": None,
    "linear": "linear",
    "mlp2x_gelu": "mlp2x_gelu",
    "mlp3x_gelu": "mlp3x_gelu",
    "qformer": "qformer:num_queries=6,num_layers=2,hidden_size=16,num_heads=4,intermediate_size=32",
    "resampler": "resampler:num_queries=5,num_layers=1,num_heads=2,head_dim=8",
    "pool": "pool:grid=2",
    "sa_perceiver": "sa_perceiver:num_heads=2",
    "tiled": "tiled:grid_rows=1,grid_cols=2,projector=linear",
}
FORMATS = (LLAVA, CUSTOM_CODE)
PROMPT = "USER: <image>\nWhat is in the picture? ASSISTANT:"
NEW_TOKENS = 4
ISOLATED_SCRIPT = Path(__file__).with_name("isolated_load.py")


@dataclass
class Case:
    """One cell's folder: what was asked, where it was written (or why it was refused), how
    (`via`), and what the model in memory computed on the probe before it was written."""

    connector: str
    moca: bool
    format: str
    folder: Path | None = None
    refused: str | None = None
    via: str = "save_model"
    reference: dict[str, torch.Tensor] | None = None

    @property
    def name(self) -> str:
        return f"{self.connector}-{'moca' if self.moca else 'plain'}-{self.format}-{self.via}"


@dataclass
class Cell:
    """A case, what the process without modalign made of it (`outputs`, `record`) and how that
    compares with modalign's loader; `same_as_saved`: the loader's outputs equal the reference."""

    case: Case
    loads: bool = False
    logits_equal: bool = False
    generations_equal: bool = False
    inputs_equal: bool = False
    same_as_saved: bool | None = None
    error: str | None = None
    record: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)


def _perturb(module: torch.nn.Module, seed: int) -> None:
    """Move every parameter away from its initialisation (zero-initialised layers included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))


def make_model(llava_dir: str | Path, connector: str, moca: bool, seed: int = 0) -> tuple:
    """The tiny LLaVA with `connector` swapped in (perturbed, so every weight matters) and, with
    `moca`, MoCa drawn away from the identity."""
    model = load_model(str(llava_dir), "cpu", torch.float32)
    processor = load_processor(str(llava_dir))
    spec = CONNECTORS[connector]
    if spec is not None:
        model, processor = swap_connector(model, processor, spec, seed=seed)
    _perturb(model.model.multi_modal_projector, seed + 1)
    if moca:
        attach_moca(model, std=0.1, seed=seed + 2)
    return model.eval(), processor


def write_cases(llava_dir: str | Path, out_root: str | Path, images: list[Path]) -> list[Case]:
    """Every connector x MoCa x format folder under `out_root` (save_model with that format), or
    the refusal's message where the model has no such form; each with its reference outputs."""
    cases = []
    for connector in CONNECTORS:
        for moca in (False, True):
            model, processor = make_model(llava_dir, connector, moca)
            reference = run_probe(model, processor, images)
            for form in FORMATS:
                case = Case(connector, moca, form, reference=reference)
                try:
                    case.folder = save_model(
                        model, processor, Path(out_root) / case.name, format=form
                    )
                except ModelError as exc:
                    case.refused = str(exc)
                cases.append(case)
    return cases


def probe_images(folder: Path) -> list[Path]:
    """Two small random RGB images (not square, larger than one tile) saved as PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(2):
        g = torch.Generator().manual_seed(i)
        pixels = (torch.rand(18 + i, 22, 3, generator=g) * 255).to(torch.uint8).numpy()
        path = folder / f"probe{i}.png"
        Image.fromarray(pixels, "RGB").save(path)
        paths.append(path)
    return paths


def run_probe(model: Any, processor: Any, images: list[Path]) -> dict[str, torch.Tensor]:
    """The processor's batch for the probe (one prompt per image), the logits and a greedy
    generation of `model`."""
    pictures = [Image.open(p).convert("RGB") for p in images]
    batch = processor(images=pictures, text=[PROMPT] * len(pictures), return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits  # (B, T, V)
        generated = model.generate(**batch, max_new_tokens=NEW_TOKENS, do_sample=False)
    return {"logits": logits.float(), "generated": generated, "input_ids": batch["input_ids"],
            "pixel_values": batch["pixel_values"].float()}  # fmt: skip


def expected_outputs(folder: Path, images: list[Path], dtype: Any = torch.float32) -> dict:
    """What modalign's own loader (`load_model`, `load_processor`) computes from `folder`."""
    model = load_model(str(folder), "cpu", dtype)
    return run_probe(model, load_processor(str(folder)), images)


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], *keys: str) -> bool:
    return all(torch.equal(a[k], b[k]) for k in keys)


def run_isolated(jobs: list[dict], images: list[Path], work: Path, timeout: float = 600) -> Path:
    """Run `isolated_load.py` on `jobs` in a fresh process; returns its output folder."""
    work.mkdir(parents=True, exist_ok=True)
    spec = {"images": [str(p) for p in images], "prompt": PROMPT, "new_tokens": NEW_TOKENS,
            "threads": torch.get_num_threads(), "models": jobs}  # fmt: skip
    (work / "jobs.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")
    env = {**os.environ, "HF_MODULES_CACHE": str(work / "hf_modules"), "HF_HUB_OFFLINE": "1"}
    out = work / "out"
    done = subprocess.run(
        [sys.executable, str(ISOLATED_SCRIPT), str(work / "jobs.json"), str(out)],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"isolated_load.py failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return out


def measure(
    cases: list[Case], images: list[Path], work: str | Path, dtype: str = "float32"
) -> list[Cell]:
    """Load every written case without modalign (one subprocess, weights in `dtype`) and compare
    it with modalign's loader on the same folder, and (float32) the loader with each case's
    reference."""
    from safetensors.torch import load_file

    work = Path(work)
    written = [c for c in cases if c.folder is not None]
    jobs = [{"name": c.name, "path": str(c.folder), "trust_remote_code": c.format == CUSTOM_CODE,
             "dtype": dtype} for c in written]  # fmt: skip
    out = run_isolated(jobs, images, work / "isolated")
    cells = []
    for case in cases:
        cell = Cell(case)
        cells.append(cell)
        if case.folder is None:
            continue
        cell.record = json.loads((out / f"{case.name}.json").read_text(encoding="utf-8"))
        if "error" in cell.record or cell.record["blocked_modules_loaded"]:
            cell.error = cell.record.get("error") or str(cell.record["blocked_modules_loaded"])
            continue
        cell.outputs = got = load_file(str(out / f"{case.name}.safetensors"))
        want = expected_outputs(case.folder, images, getattr(torch, dtype))
        cell.loads = True
        cell.inputs_equal = _equal(got, want, "input_ids", "pixel_values")
        cell.logits_equal = _equal(got, want, "logits")
        cell.generations_equal = _equal(got, want, "generated")
        if case.reference is not None and dtype == "float32":  # references run in float32
            cell.same_as_saved = _equal(want, case.reference, *want)
    return cells


def markdown_table(cells: list[Cell]) -> str:
    """The matrix as a Markdown table (one row per cell)."""

    def yes(flag: bool) -> str:
        return "yes" if flag else "**no**"

    lines = [
        "| connector | MoCa | format | written | loads without modalign | inputs equal "
        "| logits equal | generations equal | modalign's loader: the saved model |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in cells:
        case = cell.case
        head = f"| {case.connector} | {'on' if case.moca else 'off'} | {case.format} |"
        if case.folder is None:
            reason = (case.refused or "").replace("|", "/")
            lines.append(f"{head} refused: {reason} | - | - | - | - | - |")
            continue
        if not cell.loads:
            lines.append(f"{head} yes | **no**: {cell.error} | - | - | - | - |")
            continue
        same = "-" if cell.same_as_saved is None else yes(cell.same_as_saved)
        lines.append(f"{head} yes | yes | {yes(cell.inputs_equal)} | {yes(cell.logits_equal)} "
                     f"| {yes(cell.generations_equal)} | {same} |")  # fmt: skip
    return "\n".join(lines)
