"""Knowledge distillation loss of the ImageNet recipe (docs/method.md §Knowledge distillation)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    temperature: float = 1.0,
    alpha: float = 1.0,
) -> torch.Tensor:
    """alpha · T² · KL(softmax(teacher/T) ‖ softmax(student/T)) (batch mean) + (1 − alpha) · CE(student, labels).

    The paper's recipe is T = 1, alpha = 1: pure distillation, no label term. The teacher's logits are detached:
    no gradient ever reaches the teacher. The T² factor keeps gradient size independent of T (Hinton et al.).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ in shape")
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=1)
    teacher_log_probs = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True)
    loss = alpha * temperature**2 * kl
    if alpha < 1.0:
        if labels is None:
            raise ValueError("alpha < 1 mixes in the label loss: labels are needed")
        loss = loss + (1.0 - alpha) * F.cross_entropy(student_logits.float(), labels)
    return loss
