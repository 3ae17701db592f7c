"""Training on `transformers.Trainer`: stages (pre-train, SFT), recipes, unlock strategies per
component, the loss with alignment objectives, and the MIR monitor callback."""

from modalign.train.fit import PRECISIONS, SCHEDULES, ResumableTrainer, TrainConfig, fit
from modalign.train.inputs import TrainInputs
from modalign.train.loss import LossResult, compute_loss, unwrap
from modalign.train.monitor import MIRMonitor, first_plateau, plateaued
from modalign.train.probe import PeriodicProbe, evaluating, is_main_process
from modalign.train.recipe import MonitorSettings, Recipe, prepare, train_stage
from modalign.train.run import run_training
from modalign.train.stage import DEFAULT_LR, Stage, run_stage
from modalign.train.trainer import AlignmentTrainer
from modalign.train.unlock import (
    Tune,
    UnlockReport,
    UnlockSpec,
    apply_unlock,
    finish_stage,
    param_groups,
)

__all__ = [
    "DEFAULT_LR",
    "PRECISIONS",
    "SCHEDULES",
    "AlignmentTrainer",
    "LossResult",
    "MIRMonitor",
    "MonitorSettings",
    "PeriodicProbe",
    "Recipe",
    "ResumableTrainer",
    "Stage",
    "TrainConfig",
    "TrainInputs",
    "Tune",
    "UnlockReport",
    "UnlockSpec",
    "apply_unlock",
    "compute_loss",
    "evaluating",
    "finish_stage",
    "first_plateau",
    "fit",
    "is_main_process",
    "param_groups",
    "plateaued",
    "prepare",
    "run_stage",
    "run_training",
    "train_stage",
    "unwrap",
]
