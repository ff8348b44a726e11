"""Accuracy and the files a run writes about itself: metrics as JSONL and CSV, and a training-curve picture."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch

from sdbnn.io import atomic_write


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, torch.Tensor]:
    """How many samples have their label among the top-k logits, for each k (k capped at the class count), as
    0-dim tensors on the logits' device: reading them is left to the caller (once per epoch, not per batch)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return {k: hits[:, :k].any(dim=1).sum() for k in ks}


class MetricsLog:
    """One record per epoch, rewritten atomically as ``metrics.jsonl`` and ``metrics.csv`` in ``directory``."""

    def __init__(self, directory: str | Path, records: list[dict] | None = None):
        self.directory = Path(directory)
        self.records = list(records or [])

    def append(self, record: dict) -> None:
        self.records.append(dict(record))
        lines = "".join(json.dumps(r) + "\n" for r in self.records)
        atomic_write(self.directory / "metrics.jsonl", lambda tmp: tmp.write_text(lines))
        columns = list(dict.fromkeys(key for r in self.records for key in r))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.records)
        atomic_write(self.directory / "metrics.csv", lambda tmp: tmp.write_text(buffer.getvalue()))

    @classmethod
    def load(cls, directory: str | Path) -> MetricsLog:
        path = Path(directory) / "metrics.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
        return cls(directory, records)

    def plot(self, path: str | Path | None = None, title: str = "") -> Path:
        """Training loss and held-out top-1 per epoch, as a PNG (default ``training_curve.png``)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path) if path else self.directory / "training_curve.png"
        epochs = [r["epoch"] + 1 for r in self.records]
        figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
        loss_axis.plot(epochs, [r["train_loss"] for r in self.records], label="train")
        if all("val_loss" in r for r in self.records):
            loss_axis.plot(epochs, [r["val_loss"] for r in self.records], label="held out")
        loss_axis.set(xlabel="epoch", ylabel="loss", title="loss")
        loss_axis.legend()
        for key, label in (("val_top1", "top-1"), ("val_top5", "top-5")):
            if all(key in r for r in self.records):
                accuracy_axis.plot(epochs, [100 * r[key] for r in self.records], label=label)
        accuracy_axis.set(xlabel="epoch", ylabel="held-out accuracy (%)", title="accuracy")
        accuracy_axis.legend()
        figure.suptitle(title)
        figure.tight_layout()
        atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
        plt.close(figure)
        return path
