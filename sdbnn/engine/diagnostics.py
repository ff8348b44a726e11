"""Per-epoch evidence of what training does to a binary network (``diagnostics: true``; off by default).

Each epoch's record gains:
- ``grad_norm_median`` / ``grad_norm_max`` / ``grad_norm_last``: total gradient norm over the epoch's optimizer
  steps, and ``grad_norm_top_layers``: the parameters with the largest gradient norm at any step;
- ``weight_flip_fraction``: the fraction of binary weights (signs of the WSD-shifted weights) that differ between the
  start and the end of the epoch, and ``weight_flip_top_layers``;
- ``act_band_fraction`` / ``weight_band_fraction``: the fraction of pre-sign values with |t·x| < 1, EDE's sensitive
  band where the surrogate gradient is large (activations measured on one held-out batch);
- ``bn_mean_gap`` / ``bn_var_log_ratio`` (mean over BatchNorm layers) and their largest layer: how far the running
  statistics used in evaluation are from the statistics of that batch in training mode;
- ``train_mode_top1`` / ``eval_mode_top1``: accuracy on that same batch with batch statistics and with running
  statistics.
Per step it costs one fused norm over the gradients (no host synchronisation); the rest runs once per epoch.
"""

from __future__ import annotations

import torch
from torch import nn

from sdbnn import reference
from sdbnn.layers import SDConv2d

TOP_LAYERS = 3


def binary_weight_signs(conv: SDConv2d) -> torch.Tensor:
    """The signs the convolution uses: sign(W') with W' WSD-shifted when WSD is on (int8)."""
    weight = conv.weight.detach().float()
    shifted = reference.wsd_shift_weight(weight, conv.alpha.detach().float()) if conv.wsd else weight
    return torch.sign(shifted).to(torch.int8)


def flip_fraction(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Fraction of entries whose sign differs (0-dim tensor)."""
    return (before != after).float().mean()


def band_fraction(values: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """Fraction of values inside EDE's sensitive band |t·x| < 1 (0-dim tensor)."""
    return ((values.float() * t).abs() < 1).float().mean()


def batchnorm_gap(inputs: torch.Tensor, bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean over channels of |batch mean − running mean| / running std,
        mean over channels of |log(batch var / running var)|) for the batch ``inputs`` of ``bn``."""
    dims = [0] + list(range(2, inputs.dim()))
    values = inputs.detach().float()
    batch_mean, batch_var = values.mean(dims), values.var(dims, unbiased=False)
    running_std = (bn.running_var.float() + bn.eps).sqrt()
    mean_gap = ((batch_mean - bn.running_mean.float()).abs() / running_std).mean()
    var_ratio = ((batch_var + bn.eps) / (bn.running_var.float() + bn.eps)).log().abs().mean()
    return mean_gap, var_ratio


def _top(names: list[str], values: torch.Tensor, count: int = TOP_LAYERS) -> list[list]:
    order = values.argsort(descending=True)[:count].tolist()
    return [[names[i], float(values[i])] for i in order]


class TrainingDiagnostics:
    """Collects the diagnostics of one epoch; the Trainer calls `start_epoch`, `after_backward` (once per optimizer
    step, with complete gradients) and `end_epoch`."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.convs = {name: m for name, m in model.named_modules() if isinstance(m, SDConv2d)}
        self.binary_convs = {name: m for name, m in self.convs.items() if m.binary_weights}
        self.batchnorms = {name: m for name, m in model.named_modules()
                           if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats}
        self.parameter_names = [name for name, p in model.named_parameters() if p.requires_grad]
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.start_epoch()

    def start_epoch(self) -> None:
        self.signs = {name: binary_weight_signs(conv) for name, conv in self.binary_convs.items()}
        self.step_norms: list[torch.Tensor] = []
        self.layer_max: torch.Tensor | None = None

    def after_backward(self) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros((), device=p.device) for p in self.parameters]
        layer_norms = torch.stack(torch._foreach_norm(grads)).float()
        self.step_norms.append(torch.linalg.vector_norm(layer_norms))
        self.layer_max = layer_norms if self.layer_max is None else torch.maximum(self.layer_max, layer_norms)

    @torch.no_grad()
    def end_epoch(self, images: torch.Tensor, labels: torch.Tensor, t: float) -> dict:
        record = {}
        if self.step_norms:
            norms = torch.stack(self.step_norms).cpu()
            record.update(grad_norm_median=float(norms.median()), grad_norm_max=float(norms.max()),
                          grad_norm_last=float(norms[-1]),
                          grad_norm_top_layers=_top(self.parameter_names, self.layer_max.cpu()))
        if self.binary_convs:
            names = list(self.binary_convs)
            flips = [flip_fraction(self.signs[n], binary_weight_signs(self.binary_convs[n])) for n in names]
            counts = torch.tensor([float(self.signs[n].numel()) for n in names])
            per_layer = torch.stack(flips).cpu()
            record["weight_flip_fraction"] = float((per_layer * counts).sum() / counts.sum())
            record["weight_flip_top_layers"] = _top(names, per_layer)
            weight_bands = torch.stack([band_fraction(self._shifted_weight(self.binary_convs[n]), t)
                                        for n in names]).cpu()
            record["weight_band_fraction"] = float((weight_bands * counts).sum() / counts.sum())
        record.update(self._batch_statistics(images, labels, t))
        return record

    @staticmethod
    def _shifted_weight(conv: SDConv2d) -> torch.Tensor:
        weight = conv.weight.detach().float()
        return reference.wsd_shift_weight(weight, conv.alpha.detach().float()) if conv.wsd else weight

    def _batch_statistics(self, images: torch.Tensor, labels: torch.Tensor, t: float) -> dict:
        """EDE band of the activations, BatchNorm drift and train/eval accuracy on one batch; the model's buffers
        (running statistics) and mode are restored afterwards."""
        band_hits, band_total, gaps = [], [], {}

        def act_hook(conv):
            def hook(module, inputs):
                x = inputs[0]
                shift = module.gate(x) if module.gate is not None else None
                values = x if shift is None else x + shift[:, :, None, None]
                band_hits.append(((values.float() * t).abs() < 1).sum())
                band_total.append(values.numel())
            return hook

        def bn_hook(name):
            def hook(module, inputs):
                gaps[name] = batchnorm_gap(inputs[0], module)
            return hook

        buffers = {name: value.clone() for name, value in self.model.named_buffers()}
        was_training = self.model.training
        handles = [conv.register_forward_pre_hook(act_hook(conv)) for conv in self.convs.values()]
        handles += [bn.register_forward_pre_hook(bn_hook(name)) for name, bn in self.batchnorms.items()]
        try:
            self.model.train()
            train_top1 = (self.model(images).argmax(1) == labels).float().mean()
        finally:
            for handle in handles:
                handle.remove()
            for name, value in self.model.named_buffers():
                value.copy_(buffers[name])  # a diagnostic forward must not move the running statistics
        self.model.eval()
        eval_top1 = (self.model(images).argmax(1) == labels).float().mean()
        self.model.train(was_training)
        record = {"train_mode_top1": float(train_top1), "eval_mode_top1": float(eval_top1)}
        if band_total:
            record["act_band_fraction"] = float(torch.stack(band_hits).sum()) / sum(band_total)
        if gaps:
            names = list(gaps)
            mean_gaps = torch.stack([gaps[n][0] for n in names]).cpu()
            var_gaps = torch.stack([gaps[n][1] for n in names]).cpu()
            record.update(bn_mean_gap=float(mean_gaps.mean()), bn_var_log_ratio=float(var_gaps.mean()),
                          bn_top_layers=_top(names, mean_gaps))
        return record
