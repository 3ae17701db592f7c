"""A study's finished points kept as small JSON records beside its report (ARCHIVE/NAME/
VARIANT-seedK.json), so that a study resumes from them where its runs folder is gone (another
machine, a wiped disk) and its report can be regenerated from what is committed.

A record holds what the report reads from a point: the cycle's report (its config included)
and held-out evaluations, the pre-training traces, the image-token count and step time, and
`validate`'s measurements of the pre-trained model with the probe data and settings they were
made on. The checkpoint itself is not kept, so a record stands in for a point only when its
cycle config is exactly the one asked for, it has every SFT evaluation the study needs, and its
measurements are used only for the same probe data and settings (else the point is retrained,
or its measurement reported as failed). Records are plain JSON, never unpickled.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from modalign.atomic import atomic_write_json
from modalign.errors import DataError
from modalign_lab.studies.curves import TRACES

FORMAT = 1
KEPT_FILES = tuple(str(t.path) for t in TRACES.values())  # under the point's folder


def record_path(archive: Path, study: str, variant: str, seed: int) -> Path:
    """Where one point's record lives."""
    return Path(archive) / study / f"{variant}-seed{seed}.json"


def _resources_path(archive: Path, study: str, seed: int) -> Path:
    return Path(archive) / study / f"resources-seed{seed}.json"


def write_resources(archive: Path, study: str, seed: int, resources: dict[str, Any]) -> Path:
    """What the study's `prepare` returned for the seed (paths, choices): with it the points'
    configs can be rebuilt, and their records matched, without preparing again."""
    return atomic_write_json(_resources_path(archive, study, seed), resources)


def read_resources(archive: Path, study: str, seed: int) -> dict[str, Any] | None:
    """The archived resources of a seed, or None."""
    path = _resources_path(archive, study, seed)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_record(
    path: Path,
    *,
    report: dict[str, Any],
    evals: dict[str, Any],
    image_tokens: int,
    pretrain_s_per_step: float,
    folder: Path,
    measured: dict[str, Any] | None = None,
) -> Path:
    """Archive a finished point (atomically). `measured`: {"data", "settings", "record"} of
    its validate measurement, when there is one."""
    files = {rel: json.loads((folder / rel).read_text(encoding="utf-8"))
             for rel in KEPT_FILES if (folder / rel).is_file()}  # fmt: skip
    record = {
        "format": FORMAT,
        "report": report,
        "evals": evals,
        "image_tokens": image_tokens,
        "pretrain_s_per_step": pretrain_s_per_step,
        "files": files,
        "validate": measured,
    }
    return atomic_write_json(path, record)


def read_record(path: Path, config: dict[str, Any], sfts: Iterable[str]) -> dict[str, Any] | None:
    """The archived point at `path` if it is the cycle `config` and has an evaluation for every
    SFT recipe in `sfts`; None (with the reason printed) otherwise."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"[study] archived point {path} unreadable ({exc}); training it", flush=True)
        return None
    if record.get("format") != FORMAT or record["report"].get("config") != config:
        print(f"[study] archived point {path} is another cycle; training it", flush=True)
        return None
    missing = [s for s in sfts if s not in record["evals"]]
    if missing:
        print(f"[study] archived point {path} lacks SFT {missing}; training it", flush=True)
        return None
    return record


def archived_measure(
    records: dict[str, dict[str, Any]],
    pairs: Sequence[Any],
    settings: Any,
    fallback: Callable[[str, Sequence[Any], Any], dict],
) -> Callable[[str, Sequence[Any], Any], dict]:
    """A `validate` measure function for a run on `pairs` with `settings`: an archived model's
    stored measurement where it was made on exactly these (checked once, here), any other model
    measured by `fallback`."""
    usable: dict[str, dict] = {}
    if records:
        from modalign.evidence import data_fingerprint

        wanted = {"data": data_fingerprint(pairs),
                  "settings": {**settings.identity(), "n": len(pairs)}}  # fmt: skip
        usable = {model: kept["record"] for model, kept in records.items()
                  if kept.get("record") is not None
                  and all(kept.get(k) == v for k, v in wanted.items())}  # fmt: skip

    def measure(model: str, pairs: Sequence[Any], settings: Any) -> dict:
        if model in usable:
            return usable[model]
        if model in records:
            raise DataError(f"{model} is an archived point whose checkpoint is gone and whose "
                            "stored measurement was made on other probe data or settings; "
                            "retrain the point to measure it")  # fmt: skip
        return fallback(model, pairs, settings)

    return measure
