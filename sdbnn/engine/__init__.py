"""Training engine: one Trainer (Accelerate) for every launcher, and its parts: config, distillation loss,
metrics files and curves, exact-resume training checkpoints."""

from sdbnn.engine.config import TrainConfig
from sdbnn.engine.distill import distillation_loss
from sdbnn.engine.metrics import MetricsLog, topk_correct
from sdbnn.engine.state import load_training_state, save_training_state

__all__ = [
    "MetricsLog",
    "TrainConfig",
    "distillation_loss",
    "load_training_state",
    "save_training_state",
    "topk_correct",
]
