"""Load model folders the way a tool without modalign does, and record what they compute.

Run as a script (never imported for its effect; importing it only defines functions):

    python isolated_load.py JOBS.json OUT_DIR

Importing `modalign` (or `modalign_lab`) is made impossible before anything else, so only
transformers and the code shipped in a folder can build the models. JOBS.json:

    {"images": [PNG, ...], "prompt": "USER: <image>\\n... ASSISTANT:", "new_tokens": 4,
     "threads": 1, "models": [{"name": "qformer-custom-code", "path": DIR,
                               "trust_remote_code": true, "dtype": "float32"}, ...]}

For each model, `AutoModelForImageTextToText` and `AutoProcessor.from_pretrained(path,
trust_remote_code=...)`, the processor's batch (one prompt per image), the logits and a greedy
generation are written to OUT_DIR/NAME.safetensors, the classes used (or the error) to
OUT_DIR/NAME.json; one model failing does not stop the others.
"""

from __future__ import annotations

import importlib.abc
import json
import sys
from pathlib import Path

BLOCKED = ("modalign", "modalign_lab")


class _Blocked(importlib.abc.MetaPathFinder):
    """A finder that refuses the blocked packages, whatever else is installed."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{name} is blocked in this process", name=name)
        return None


def block_imports() -> None:
    """Make every import of the BLOCKED packages fail, and check that it does."""
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)  # the script's folder (a package folder) is not an import root
    sys.meta_path.insert(0, _Blocked())
    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED:
            del sys.modules[name]
    for name in BLOCKED:
        try:
            __import__(name)
        except ImportError:
            continue
        raise SystemExit(f"{name} could still be imported")


def run_model(job: dict, images: list, prompt: str, new_tokens: int, out: Path) -> dict:
    """Load one folder, run it, write its tensors; returns the record for NAME.json."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForImageTextToText, AutoProcessor

    trust = bool(job["trust_remote_code"])
    dtype = getattr(torch, job.get("dtype", "float32"))
    model = AutoModelForImageTextToText.from_pretrained(
        job["path"], trust_remote_code=trust, dtype=dtype
    )
    processor = AutoProcessor.from_pretrained(job["path"], trust_remote_code=trust)
    model.eval()
    batch = processor(images=images, text=[prompt] * len(images), return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits  # (B, T, V)
        generated = model.generate(**batch, max_new_tokens=new_tokens, do_sample=False)
    tensors = {
        "logits": logits.float().contiguous(),
        "generated": generated.contiguous(),
        "input_ids": batch["input_ids"].contiguous(),
        "pixel_values": batch["pixel_values"].float().contiguous(),
    }
    save_file(tensors, str(out / f"{job['name']}.safetensors"))
    return {
        "kept_dtypes": {n: str(p.dtype) for n, p in model.named_parameters() if p.dtype != dtype},
        "model_class": f"{type(model).__module__}.{type(model).__name__}",
        "processor_class": f"{type(processor).__module__}.{type(processor).__name__}",
        "model_type": model.config.model_type,
    }


def main(argv: list[str]) -> int:
    block_imports()
    jobs = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    import torch
    from PIL import Image

    torch.set_num_threads(int(jobs.get("threads", 1)))
    images = [Image.open(p).convert("RGB") for p in jobs["images"]]
    for job in jobs["models"]:
        try:
            record = run_model(job, images, jobs["prompt"], int(jobs["new_tokens"]), out)
        except Exception as exc:  # recorded for the caller, which reports the cell as failed
            record = {"error": f"{type(exc).__name__}: {exc}"}
        loaded = sorted(n for n, m in sys.modules.items() if m and n.split(".")[0] in BLOCKED)
        record["blocked_modules_loaded"] = loaded
        (out / f"{job['name']}.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
