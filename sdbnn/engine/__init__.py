"""Training engine. For now: a compact in-memory training loop (SGD + cosine + the EDE schedule)."""

from sdbnn.engine.loop import EpochRecord, evaluate, fit_classifier

__all__ = ["EpochRecord", "evaluate", "fit_classifier"]
