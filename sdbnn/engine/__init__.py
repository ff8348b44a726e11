"""Training engine: the compact in-memory loop used by the digits demo, and the building blocks of the Trainer
(distillation loss, metrics files and curves, exact-resume training checkpoints)."""

from sdbnn.engine.distill import distillation_loss
from sdbnn.engine.loop import EpochRecord, evaluate, fit_classifier
from sdbnn.engine.metrics import MetricsLog, topk_correct
from sdbnn.engine.state import load_training_state, save_training_state

__all__ = [
    "EpochRecord",
    "MetricsLog",
    "distillation_loss",
    "evaluate",
    "fit_classifier",
    "load_training_state",
    "save_training_state",
    "topk_correct",
]
