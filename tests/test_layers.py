"""SDConv2d against a hand-written composition of docs/method.md §SD conv, and its switches."""

import pytest
import torch
import torch.nn.functional as F

import sdbnn
from sdbnn import SDConv2d, set_ede


def manual_sd_conv(conv: SDConv2d, x: torch.Tensor) -> torch.Tensor:
    """docs/method.md §SD conv, written out directly from the module's parameters."""
    z = x.mean(dim=(2, 3))
    s = torch.sigmoid(torch.relu(z @ conv.gate.reduce.weight.t()) @ conv.gate.expand.weight.t())
    a_binary = torch.sign(x + s[:, :, None, None])
    w = conv.weight
    m = 0.01 * w.flatten(1).mean(1)
    w_binary = torch.sign(w + (torch.sigmoid(conv.alpha) * m)[:, None, None, None])
    return F.conv2d(a_binary, w_binary, None, conv.stride, conv.padding)


def test_forward_matches_spec_composition():
    conv = SDConv2d(16, 24, 3, stride=2, padding=1)
    torch.nn.init.normal_(conv.alpha)
    x = torch.randn(3, 16, 9, 7)
    torch.testing.assert_close(conv(x), manual_sd_conv(conv, x))


def test_parameters_match_official_naming_and_shapes():
    conv = SDConv2d(32, 64, 3, padding=1)
    shapes = {name: tuple(p.shape) for name, p in conv.named_parameters()}
    assert shapes == {"weight": (64, 32, 3, 3), "alpha": (64,), "gate.reduce.weight": (2, 32), "gate.expand.weight": (32, 2)}
    assert set(conv.state_dict()) == set(shapes)  # k and t are not persistent
    assert conv.k.dim() == 0 and conv.t.dim() == 0


def test_gradients_reach_every_parameter_and_the_input():
    conv = SDConv2d(16, 8, 3, padding=1)
    set_ede(conv, 1.0, 1.0)
    x = torch.randn(2, 16, 5, 5, requires_grad=True)
    (conv(x) * torch.randn(2, 8, 5, 5)).sum().backward()
    for name, p in [("x", x), *conv.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_asd_static_and_off():
    x = torch.randn(2, 16, 6, 6)
    static = SDConv2d(16, 4, 3, asd="static")
    assert tuple(static.gate.beta.shape) == (16,) and torch.all(static.gate.beta == 0)
    expected = F.conv2d(torch.sign(x + 0.5), static.effective_weight())
    torch.testing.assert_close(static(x), expected)
    off = SDConv2d(16, 4, 3, asd="off")
    assert off.gate is None
    torch.testing.assert_close(off(x), F.conv2d(torch.sign(x), off.effective_weight()))


def test_wsd_off_and_real_weights():
    conv = SDConv2d(16, 4, 3, wsd=False)
    assert not conv.alpha.requires_grad
    assert torch.equal(conv.effective_weight(), torch.sign(conv.weight))
    real = SDConv2d(16, 4, 3, binary_weights=False, wsd=False)  # ImageNet stage 1: W32/A1
    assert torch.equal(real.effective_weight(), real.weight)
    shifted = SDConv2d(16, 4, 3, binary_weights=False)
    torch.nn.init.normal_(shifted.alpha)
    m = 0.01 * shifted.weight.flatten(1).mean(1)
    expected = shifted.weight + (torch.sigmoid(shifted.alpha) * m)[:, None, None, None]
    torch.testing.assert_close(shifted.effective_weight(), expected)


def test_set_ede_updates_buffers_in_place():
    model = sdbnn.create_model("resnet20")
    convs = [m for m in model.modules() if isinstance(m, SDConv2d)]
    pointers = [c.k.data_ptr() for c in convs]
    assert set_ede(model, 1000.0, 1e-3) == 18
    assert [c.k.data_ptr() for c in convs] == pointers
    assert all(c.k.item() == 1000.0 and abs(c.t.item() - 1e-3) < 1e-9 for c in convs)
    set_ede(model, torch.tensor(2.0), torch.tensor(3.0))
    assert all(c.k.item() == 2.0 and c.t.item() == 3.0 for c in convs)


def test_width_one_bottleneck_and_bad_options():
    conv = SDConv2d(16, 16, 3, se_reduction=16)
    assert conv.gate.reduce.out_features == 1
    with pytest.raises(ValueError, match="no hidden unit"):
        SDConv2d(8, 16, 3, se_reduction=16)
    with pytest.raises(ValueError, match="unknown asd mode"):
        SDConv2d(16, 16, 3, asd="sometimes")
    with pytest.raises(ValueError, match="unknown surrogate"):
        SDConv2d(16, 16, 3, act_surrogate="tanh")
    with pytest.raises(ValueError, match="expects input"):
        SDConv2d(16, 16, 3)(torch.randn(1, 8, 5, 5))
