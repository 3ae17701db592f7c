"""Training a study's grid points: one after another in this process, or side by side in worker
processes (`lab study --jobs N`).

A point is trained by one function either way (`train_point`), so a study's numbers do not
depend on N. Workers are spawned (fresh interpreters, no forked torch state), each with its own
torch thread count, and write their progress to OUT/NAME/VARIANT/seedK.log instead of the
terminal; the parent validates and rewrites the report as each point finishes, in whatever
order they finish. A killed run resumes point by point as before (every stage is resumable).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modalign.errors import ConfigError
from modalign.train import Recipe
from modalign_lab.pipeline.cycle import CycleConfig, config_record, finetune, run_cycle

MAIN_SFT = "sft"  # the cycle's own SFT recipe


@dataclass(frozen=True)
class PointJob:
    """What it takes to train one grid point; picklable (no callables) for a worker."""

    variant: str
    seed: int
    folder: Path  # OUT/NAME/VARIANT/seedK
    cfg: CycleConfig
    data: Path  # the seed's dataset
    sfts: tuple[tuple[str, Recipe], ...] = ()  # extra SFT recipes: (name, recipe)
    reuse_from: Path | None = None  # OUT: copy an identical finished point of another study

    @property
    def log(self) -> Path:
        """Where a worker writes the point's progress."""
        return self.folder.with_name(self.folder.name + ".log")


def train_point(job: PointJob) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Run (or resume) the point's cycle and its extra SFT recipes; returns the cycle report and
    the held-out evaluation per SFT recipe."""
    if job.reuse_from is not None:
        reuse_identical(job.reuse_from, job.folder, job.cfg)
    report = run_cycle(job.folder, job.cfg, data=job.data)
    evals = {MAIN_SFT: report["eval"]}
    for name, recipe in job.sfts:
        print(f"[study] {job.variant} seed {job.seed}: SFT {name}", flush=True)
        evals[name] = finetune(job.folder, job.cfg, job.data, f"sft-{name}", recipe)["eval"]
    return report, evals


Done = Callable[[PointJob, dict[str, Any], dict[str, dict[str, Any]]], None]


def run_jobs(
    jobs: Sequence[PointJob], done: Done, *, workers: int = 1, threads: int | None = None
) -> None:
    """Train every job and call `done(job, report, evals)` in this process as each finishes.
    `workers` > 1: that many spawned processes, each with `threads` torch threads (default: the
    CPUs shared out). The first failure stops the run (the other workers are terminated; their
    points resume on the next run) and is raised here."""
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            print(f"[study] {job.variant} seed {job.seed}", flush=True)
            done(job, *train_point(job))
        return
    workers = min(workers, len(jobs))
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                             initargs=(threads,)) as pool:  # fmt: skip
        pending: dict[Future, PointJob] = {pool.submit(_logged_point, j): j for j in jobs}
        print(f"[study] {len(jobs)} points on {workers} workers x {threads} threads; "
              f"progress in OUT/NAME/VARIANT/seedK.log", flush=True)  # fmt: skip
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    job = pending.pop(future)
                    report, evals = future.result()
                    print(f"[study] {job.variant} seed {job.seed}: finished", flush=True)
                    done(job, report, evals)
        except BaseException:  # a failed point, or Ctrl-C: stop the others (they resume later)
            pool.shutdown(wait=False, cancel_futures=True)
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
            raise


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _logged_point(job: PointJob) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """`train_point` in a worker, its stdout and stderr appended to the point's log."""
    job.log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(job.log, "a", encoding="utf-8") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            return train_point(job)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def reuse_world(
    out: Path, data: Path, key: dict[str, Any], tokenizer_from: Path | None
) -> Path | None:
    """Hard-link a world another study under `out` generated with this `towers.world_key` and
    the same tokenizer (copied from `tokenizer_from`) into `data`, only when `data` does not
    exist yet: the 51,200-image world costs minutes per seed. Returns its source, or None."""
    from modalign_lab.towers.train import holds_world

    if data.exists() or tokenizer_from is None:  # a trained tokenizer: not checked, not reused
        return None
    tokenizer = (Path(tokenizer_from) / "tokenizer.json").read_bytes()
    for source in sorted(p.parent for p in Path(out).glob(f"*/{data.name}/manifest.json")):
        theirs = source / "tokenizer" / "tokenizer.json"
        if holds_world(source, key) and theirs.is_file() and theirs.read_bytes() == tokenizer:
            _copy_whole(source, data, copy_function=_link_or_copy)
            print(f"[study] {data} is the world {source}: linked", flush=True)
            return source
    return None


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copy2(src, dst)


def _copy_whole(source: Path, target: Path, **copytree: Any) -> None:
    """Copy a folder all or nothing: into TARGET.copying, then renamed (a killed copy is redone)."""
    partial = target.with_name(target.name + ".copying")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial, **copytree)
    partial.rename(target)


def reuse_identical(out: Path, folder: Path, cfg: CycleConfig) -> Path | None:
    """Copy a finished point with exactly this cycle from another study under `out` into
    `folder` (only when `folder` does not exist yet); returns where it came from, or None."""
    if folder.exists():
        return None
    record = config_record(cfg)
    for other in sorted(Path(out).glob(f"*/*/seed{cfg.seed}/cycle.json")):
        try:
            same = json.loads(other.read_text(encoding="utf-8")).get("config") == record
        except (OSError, ValueError):
            continue
        if same:
            _copy_whole(other.parent, folder)
            print(f"[study] {folder} is the finished point {other.parent}: copied", flush=True)
            return other.parent
    return None
