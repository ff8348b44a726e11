"""The distillation loss against docs/method.md §Knowledge distillation, written out by hand."""

import pytest
import torch

import sdbnn
from sdbnn.engine.distill import distillation_loss


@pytest.mark.parametrize("temperature,alpha", [(1.0, 1.0), (4.0, 1.0), (2.0, 0.3)])
def test_matches_written_out_formula(temperature, alpha):
    student = torch.randn(6, 10, dtype=torch.float64)
    teacher = torch.randn(6, 10, dtype=torch.float64)
    labels = torch.randint(0, 10, (6,))
    p_teacher = torch.softmax(teacher / temperature, 1)
    log_p_student = torch.log_softmax(student / temperature, 1)
    kl = (p_teacher * (torch.log(p_teacher) - log_p_student)).sum(1).mean()
    ce = -torch.log_softmax(student, 1)[torch.arange(6), labels].mean()
    expected = alpha * temperature**2 * kl + (1 - alpha) * ce
    got = distillation_loss(student, teacher, labels, temperature, alpha)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)


def test_teacher_gets_no_gradient_and_does_not_change():
    teacher = sdbnn.create_model("resnet20_fp").eval()
    student = sdbnn.create_model("resnet20")
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        teacher_logits = teacher(x)
    distillation_loss(student(x), teacher_logits).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # eval: BN stats untouched
    assert student.fc.weight.grad is not None


def test_identical_logits_give_zero_and_errors_are_clear():
    logits = torch.randn(3, 5)
    assert distillation_loss(logits, logits).abs() < 1e-6
    with pytest.raises(ValueError, match="alpha must be in"):
        distillation_loss(logits, logits, alpha=1.5)
    with pytest.raises(ValueError, match="labels are needed"):
        distillation_loss(logits, logits, alpha=0.5)
    with pytest.raises(ValueError, match="differ in shape"):
        distillation_loss(logits, torch.randn(3, 6))
