"""ONNX export of a trained model's inference form, and its agreement with PyTorch under onnxruntime.

    python -m sdbnn.export RUN_DIR model.onnx --format onnx    # exports, then checks the file (sdbnn.deploy.cli)

The graph holds standard ONNX ops only (Sign, Conv, ReduceMean, MatMul, Sigmoid, ...), with a dynamic batch axis:
`sdbnn.deploy.inference.inference_model` replaces each SD conv by plain ops first.

What agreement can mean for a binary network: two fp32 runtimes round differently in the last bits (onnxruntime's
sigmoid, conv and BatchNorm against PyTorch's). Where a binarized value ``x + shift`` lies within that rounding of 0,
the two may pick different signs, and one flipped sign moves a BNN's logits visibly. So `agreement` splits the
images: those whose every binarized value is farther than `DECIDED_MARGIN` from 0 must give logits within
`LOGIT_RTOL` of the image's largest logit (a wrong graph fails this on every image); the others are counted and their
differences reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from sdbnn.deploy.inference import InferenceSDConv2d, inference_model
from sdbnn.io import atomic_write

# |x + shift| beyond which both runtimes take the same sign. Measured on ResNet-20 and the held-out digits: images
# whose every |x + shift| exceeds 1e-7 matched, within 3e-6, with graph optimisations off.
DECIDED_MARGIN = 1e-6
# On images whose signs are all decided, the logits differ by the fp32 rounding of the real layers only, relative to
# the image's largest |logit| (at least 1): measured up to 6.5e-7 (ResNet-18 ImageNet at 96 px, logits ~130).
LOGIT_RTOL = 1e-5


def export_onnx(model: nn.Module, path: str | Path, input_size: Sequence[int], *, opset: int | None = None) -> Path:
    """Export the inference form of ``model`` to ONNX (input "images" [batch, C, H, W] with a dynamic batch,
    output "logits"), atomically; returns the path. Raises if any non-standard op reaches the graph."""
    import torch.onnx

    inference = inference_model(model).cpu()
    example = torch.zeros(2, *input_size)
    # optimize=False: the exporter's optimizer folds BatchNorm into the convs, which would turn the ±1 weights
    # into real ones; constants are folded below instead
    program = torch.onnx.export(
        inference, (example,), dynamo=True, optimize=False, verbose=False, opset_version=opset, input_names=["images"],
        output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    try:
        import onnxscript.optimizer

        onnxscript.optimizer.fold_constants(program.model)
        onnxscript.optimizer.remove_unused_nodes(program.model)
    except (ImportError, AttributeError):  # an older onnxscript: the graph stays valid, only less tidy
        pass
    foreign = sorted({f"{node.domain}::{node.op_type}" for node in program.model.graph.all_nodes()
                      if node.domain not in ("", "ai.onnx")})
    if foreign:
        raise RuntimeError(f"the ONNX graph contains non-standard ops {foreign}; it would not run in every runtime")
    return atomic_write(path, lambda tmp: program.save(str(tmp), external_data=False))


def onnx_op_types(path: str | Path) -> set[str]:
    """The (domain-qualified for non-default domains) op types of an ONNX file's main graph and functions."""
    import onnx

    proto = onnx.load(str(path))
    nodes = [*proto.graph.node, *(node for function in proto.functions for node in function.node)]
    return {node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}" for node in nodes}


def onnx_logits(path: str | Path, images: torch.Tensor, *, optimize_graph: bool = False) -> torch.Tensor:
    """Run an exported model with onnxruntime on CPU.

    onnxruntime's graph optimisations are off unless ``optimize_graph``: they fold BatchNorm into the ±1
    convolutions (among others), which changes float rounding and so moves more binarized values across 0.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if not optimize_graph:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: images.detach().cpu().float().numpy()})
    return torch.from_numpy(logits)


def logits_and_sign_margins(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch's logits of ``model``'s inference form (equal to the model's in eval mode) and, per image, the
    smallest |x + shift| that any activation sign binarizes: how close the image comes to a sign decided by
    rounding."""
    inference = inference_model(model).cpu()
    margins = []

    def record(module, inputs):
        margins.append(module.shifted_input(inputs[0]).abs().flatten(1).amin(1))

    handles = [module.register_forward_pre_hook(record) for module in inference.modules()
               if isinstance(module, InferenceSDConv2d)]
    try:
        with torch.no_grad():
            logits = inference(images.cpu().float())
    finally:
        for handle in handles:
            handle.remove()
    return logits, torch.stack(margins).amin(0)


def agreement(path: str | Path, model: nn.Module, images: torch.Tensor, *, optimize_graph: bool = False) -> dict:
    """onnxruntime's logits of the file at ``path`` against PyTorch's on ``images`` (JSON-able). ``passed``: at
    least one image has all its signs decided, and every such image is within `LOGIT_RTOL`."""
    expected, margins = logits_and_sign_margins(model, images)
    logits = onnx_logits(path, images, optimize_graph=optimize_graph)
    if logits.shape != expected.shape:
        raise RuntimeError(f"onnxruntime returned logits of shape {tuple(logits.shape)}, PyTorch "
                           f"{tuple(expected.shape)}")
    difference = (logits - expected).abs().amax(dim=1)
    relative = difference / expected.abs().amax(dim=1).clamp_min(1.0)
    decided = margins > DECIDED_MARGIN
    same_top1 = logits.argmax(1) == expected.argmax(1)
    return {
        "images": len(images),
        "onnxruntime_graph_optimizations": optimize_graph,
        "decided_margin": DECIDED_MARGIN,
        "logit_rtol": LOGIT_RTOL,
        "decided_images": int(decided.sum()),
        "max_logit_difference_decided": float(difference[decided].max()) if decided.any() else None,
        "max_relative_difference_decided": float(relative[decided].max()) if decided.any() else None,
        "max_logit_difference": float(difference.max()),
        "images_over_tolerance": int((relative > LOGIT_RTOL).sum()),
        "top1_agreement": int(same_top1.sum()),
        "top1_agreement_decided": int(same_top1[decided].sum()),
        "passed": bool(decided.any()) and bool((relative[decided] <= LOGIT_RTOL).all()),
    }


def describe_agreement(result: dict) -> str:
    """One paragraph for the command line."""
    decided = result["decided_images"]
    worst, relative = result["max_logit_difference_decided"], result["max_relative_difference_decided"]
    worst_text = "—" if worst is None else f"{worst:.3g} ({relative:.2g} of the largest logit)"
    text = (f"onnxruntime vs PyTorch on {result['images']} images: {decided} have every sign decided by more than "
            f"{result['decided_margin']:g}, their logits differ by at most {worst_text}, limit "
            f"{result['logit_rtol']:g}; over all images the largest difference is "
            f"{result['max_logit_difference']:.3g} and top-1 agrees on {result['top1_agreement']}/{result['images']}")
    if not decided:
        text += "; no image has all its signs decided, so nothing could be compared"
    return text + (" -> ok" if result["passed"] else " -> FAILED")
