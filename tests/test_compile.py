"""Whole models under torch.compile(fullgraph=True) against eager: same loss, same gradients, no graph breaks,
and no recompilation when the EDE (k, t) change between epochs."""

import copy

import pytest
import torch

import sdbnn
from sdbnn.testing import assert_gradients_close, loss_and_gradients, spread_binary_weights

MODELS = {"resnet20": 32, "vgg_small": 32, "resnet18_cifar": 32, "resnet18_imagenet": 64}
# An Inductor compile of a whole model takes 1-2 minutes on 2 cores: the default run compiles ResNet-20 (the recipe
# every CPU run uses), `-m slow` the other three; every model's graph-break check stays in the default run.
COMPILED_IN_DEFAULT_RUN = {"resnet20"}


def make(name):
    model = sdbnn.create_model(name, num_classes=10)
    # the schedule's middle: k = 10 ≠ 1, so a compiled path that lost k (or t) shows as a 10× gradient error
    sdbnn.set_ede(model, 10.0, 0.1)
    if name == "resnet18_imagenet":
        spread_binary_weights(model)
    return model


@pytest.mark.parametrize("name", [pytest.param(name, marks=[] if name in COMPILED_IN_DEFAULT_RUN else pytest.mark.slow)
                                  for name in MODELS])
def test_compiled_model_matches_eager(name):
    torch._dynamo.reset()
    eager = make(name)
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, fullgraph=True)
    size = MODELS[name]
    x, labels = torch.randn(2, 3, size, size), torch.tensor([3, 7])
    eager_loss, eager_grads = loss_and_gradients(eager, x, labels)
    compiled_loss, compiled_grads = loss_and_gradients(compiled_model, x, labels, forward=compiled)
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-4, abs=1e-4)
    assert_gradients_close(compiled_grads, eager_grads)


@pytest.mark.parametrize("name", MODELS)
def test_no_graph_breaks(name):
    torch._dynamo.reset()
    size = MODELS[name]
    explanation = torch._dynamo.explain(make(name))(torch.randn(2, 3, size, size))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_changing_ede_does_not_recompile_and_is_used():
    torch._dynamo.reset()
    compilations = []

    def counting_backend(graph_module, example_inputs):
        compilations.append(graph_module)
        return graph_module.forward

    eager = make("resnet20")
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, backend=counting_backend, fullgraph=True)
    x, labels = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
    grads_by_epoch = []
    for k, t in [(1000.0, 1e-3), (10.0, 0.1), (1.0, 9.8)]:  # three epochs of the schedule
        sdbnn.set_ede(eager, k, t)
        sdbnn.set_ede(compiled_model, k, t)
        _, eager_grads = loss_and_gradients(eager, x, labels)
        _, compiled_grads = loss_and_gradients(compiled_model, x, labels, forward=compiled)
        assert_gradients_close(compiled_grads, eager_grads)  # the new k/t really reach the compiled graph
        grads_by_epoch.append(compiled_grads["layer1.0.conv1.weight"])
    assert len(compilations) == 1, f"{len(compilations)} compilations for 3 (k, t) settings"
    assert not torch.allclose(grads_by_epoch[0], grads_by_epoch[2])
