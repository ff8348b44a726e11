"""A compact, deterministic training loop over in-memory tensors, following the CIFAR recipe (SPEC §4):
SGD (momentum 0.9, weight decay on all parameters), cosine LR to 0 stepped per epoch, the last partial training
batch dropped, EDE (k, t) set before every epoch, and evaluation on the full held-out set."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sdbnn.layers import set_ede
from sdbnn.reference import T_MAX, ede_schedule


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    lr: float
    k: float
    t: float
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> tuple[float, float]:
    """(mean cross-entropy, top-1 accuracy) over every sample, in eval mode."""
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(labels), batch_size):
        logits = model(images[start : start + batch_size])
        batch_labels = labels[start : start + batch_size]
        total_loss += F.cross_entropy(logits, batch_labels, reduction="sum").item()
        correct += (logits.argmax(1) == batch_labels).sum().item()
    model.train(was_training)
    return total_loss / len(labels), correct / len(labels)


def fit_classifier(
    model: nn.Module,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    val_images: torch.Tensor,
    val_labels: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 128,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    t_min: float = 1e-3,
    t_max: float = T_MAX,
    seed: int = 0,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> list[EpochRecord]:
    """Train ``model`` in place and return one record per epoch."""
    if len(train_labels) < batch_size:
        raise ValueError(f"batch size {batch_size} exceeds the {len(train_labels)} training samples")
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    order_rng = torch.Generator().manual_seed(seed)
    num_batches = len(train_labels) // batch_size
    history = []
    for epoch in range(epochs):
        started = time.perf_counter()
        k, t = ede_schedule(epoch, epochs, t_min, t_max)
        set_ede(model, k, t)
        lr_now = optimizer.param_groups[0]["lr"]
        model.train()
        order = torch.randperm(len(train_labels), generator=order_rng).to(train_labels.device)
        loss_sum, correct = 0.0, 0
        for batch in range(num_batches):
            index = order[batch * batch_size : (batch + 1) * batch_size]
            logits = model(train_images[index])
            loss = F.cross_entropy(logits, train_labels[index])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss {loss.item()} at epoch {epoch}, batch {batch}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(index)
            correct += (logits.argmax(1) == train_labels[index]).sum().item()
        scheduler.step()
        seen = num_batches * batch_size
        val_loss, val_accuracy = evaluate(model, val_images, val_labels)
        record = EpochRecord(
            epoch, lr_now, k, t, loss_sum / seen, correct / seen, val_loss, val_accuracy, time.perf_counter() - started
        )
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return history
