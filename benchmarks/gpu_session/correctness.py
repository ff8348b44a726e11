"""b. Correctness on the device: both ops (through autograd) against float64 on the ResNet-18 ImageNet layer shapes
and an odd one (fp32/bf16, ede/approx, NCHW/NHWC, fp32 weights giving bf16 signs as under autocast); then resnet20
and resnet18_imagenet compiled with the fused ops against the reference backend, both under bf16 autocast (the fp32
reference measures what bf16 itself changes). The compiled models are kept for the training stage (each model
compiles once)."""

from __future__ import annotations

import copy
import time

import torch

from benchmarks.common import Budget, Section, log
from benchmarks.gpu_session.plan import COMPILE_S, Plan, Session, Stage

ODD_ACT_SHAPE, ODD_WEIGHT_SHAPE = (3, 17, 13, 11), (24, 17, 5, 3)
CHECK_BATCH = (8, 2)  # (GPU, tiny) batch of the activation checks
KERNEL_CHECK_S = 2  # one op check on the GPU
FIRST_CHECKS_S = (25, 150)  # (GPU, tiny) share of the stage's budget for the first op checks (the models need the rest)
# sdbnn is imported inside the functions: a broken tree still gets the session's files, and preflight says what broke


def kernel_check_matrix(plan: Plan) -> tuple[list[tuple], list[tuple]]:
    """(op, shape, channels_last, dtype, surrogate, out_dtype) checks as (first, rest), in priority order: first the
    training path (bf16 channels_last activations, fp32 weights giving bf16 signs) and the odd shapes in fp32; the
    rest (NCHW bf16, approx, bf16 weights) after the model checks, with what time is left."""
    batch, bf16, fp32 = plan.pick(*CHECK_BATCH), torch.bfloat16, torch.float32
    acts = [(batch, *layer) for layer in plan.layers]
    weights = [(channels, channels, 3, 3) for channels, _, _ in plan.layers]
    first = [("act_sign", shape, True, bf16, "ede", None) for shape in acts]
    first += [("weight_sign", shape, True, fp32, "ede", bf16) for shape in weights]
    for channels_last in (True, False):
        first += [("act_sign", ODD_ACT_SHAPE, channels_last, fp32, "ede", None),
                  ("weight_sign", ODD_WEIGHT_SHAPE, channels_last, fp32, "ede", None)]
    rest = [("act_sign", shape, False, bf16, "ede", None) for shape in acts]
    rest += [("weight_sign", shape, False, fp32, "ede", None) for shape in weights]
    for channels_last in (True, False):
        rest += [("act_sign", acts[0], channels_last, bf16, "approx", None),
                 ("act_sign", acts[-1], channels_last, fp32, "approx", None),
                 ("act_sign", ODD_ACT_SHAPE, channels_last, fp32, "approx", None),
                 ("weight_sign", weights[-1], channels_last, fp32, "approx", bf16),
                 ("weight_sign", ODD_WEIGHT_SHAPE, channels_last, bf16, "approx", None)]
    return first, rest


def _check_label(op, shape, channels_last, dtype, surrogate, out_dtype) -> str:
    dtypes = str(dtype).removeprefix("torch.") + (f"->{str(out_dtype).removeprefix('torch.')}" if out_dtype else "")
    return f"{op} {tuple(shape)} {'nhwc' if channels_last else 'nchw'} {dtypes} {surrogate}"


def run_kernel_checks(section: Section, session: Session, checks: list[tuple], budget: Budget) -> None:
    from sdbnn.testing import check_act_sign, check_weight_sign

    plan = session.plan
    results = section.data.setdefault("kernel_checks", [])
    for op, shape, channels_last, dtype, surrogate, out_dtype in checks:
        label = _check_label(op, shape, channels_last, dtype, surrogate, out_dtype)
        if not budget.allows(plan.estimate(KERNEL_CHECK_S)):
            section.skip(label, "time budget of the op checks spent")
            continue
        started = time.perf_counter()
        try:
            if op == "act_sign":
                check_act_sign(shape, channels_last, dtype, surrogate, device=session.device, through="op")
            else:
                check_weight_sign(shape, channels_last, dtype, surrogate, device=session.device, through="op",
                                  out_dtype=out_dtype)
            results.append({"check": label, "passed": True, "seconds": round(time.perf_counter() - started, 2)})
        except Exception as error:  # noqa: BLE001 - a failing check is recorded and the next one runs
            results.append({"check": label, "passed": False, "seconds": round(time.perf_counter() - started, 2)})
            section.error(label, error)
        section.save()
    passed = sum(result["passed"] for result in results)
    log(f"correctness: {passed}/{len(results)} op checks passed so far")


def compare_model(name: str, session: Session) -> dict:
    """The model compiled with the fused ops vs the same weights on the reference backend, both under bf16 autocast,
    one training step's loss and gradients; the fp32 reference measures bf16's own effect. The compiled model is
    kept for the training stage (compiled once)."""
    from benchmarks import training
    from sdbnn.testing import (BF16_LOSS_RTOL, BF16_PARAMETER_GRAD_RTOL, bf16_gradient_check, loss_and_gradients,
                               spread_binary_weights)

    plan, device = session.plan, session.device
    case = plan.model_cases[name]
    model = training.build_model(name, "sdbnn", device)
    if name == "resnet18_imagenet":
        spread_binary_weights(model)
    reference_model = copy.deepcopy(model)
    prepared = training.prepare(name, case, "sdbnn", device, compile_backend=plan.compile_backend, autocast=True,
                                model=model)
    images, labels = prepared.batches[0]
    started = time.perf_counter()
    compiled_loss, compiled = loss_and_gradients(model, images, labels, forward=prepared.forward, autocast=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    prepared.first_step_s = time.perf_counter() - started
    session.prepared[(name, "sdbnn")] = prepared
    reference_loss, reference = loss_and_gradients(reference_model, images, labels, backend="reference", autocast=True)
    fp32_loss, fp32 = loss_and_gradients(reference_model, images, labels, backend="reference")
    del reference_model
    if device.type == "cuda":
        torch.cuda.empty_cache()

    loss_error = abs(compiled_loss - reference_loss) / max(abs(reference_loss), 1e-12)
    gradients = bf16_gradient_check(compiled, reference, fp32)
    passed = loss_error <= BF16_LOSS_RTOL and gradients["passed"]
    result = {
        "model": name, "batch": case[0], "resolution": case[1], "compile_backend": plan.compile_backend,
        "first_step_s": round(prepared.first_step_s, 2),
        "loss": {"compiled_bf16": compiled_loss, "reference_bf16": reference_loss, "reference_fp32": fp32_loss,
                 "relative_error": loss_error, "limit": BF16_LOSS_RTOL},
        "gradients": gradients, "passed": passed,
    }
    log(f"correctness: {name} compiled bf16 vs reference bf16: loss {loss_error:.1e}, gradients "
        f"{gradients['relative_error']:.4f}, {len(gradients['parameters_over'])}/{gradients['parameters']} tensors over "
        f"{BF16_PARAMETER_GRAD_RTOL:g} (bf16 vs fp32 reference: {gradients['bf16_vs_fp32']:.3f}) -> "
        f"{'ok' if result['passed'] else 'FAIL'}")
    return result


def correctness(section: Section, session: Session) -> None:
    first, rest = kernel_check_matrix(session.plan)
    run_kernel_checks(section, session, first, section.budget.child(session.plan.pick(*FIRST_CHECKS_S)))
    models = section.data.setdefault("models", [])
    for name in session.plan.model_cases:
        label = f"{name} compiled fused ops vs reference (bf16 autocast)"
        if not section.allows(label, session.plan.estimate(COMPILE_S[name])):
            continue
        try:
            result = compare_model(name, session)
            models.append(result)
            if not result["passed"]:
                raise AssertionError(f"{name}: compiled bf16 gradients differ from the reference beyond the limits "
                                     f"(see models[].gradients.worst)")
        except Exception as error:  # noqa: BLE001 - the next model still runs
            section.error(label, error)
        section.save()
    run_kernel_checks(section, session, rest, section.budget)


def correctness_table(data: dict) -> str:
    from sdbnn.testing import BF16_GLOBAL_GRAD_RTOL, BF16_LOSS_RTOL, BF16_PARAMETER_GRAD_RTOL, BF16_PARAMETERS_OVER_SHARE

    checks = data.get("kernel_checks", [])
    failed = [check["check"] for check in checks if not check["passed"]]
    failures = f": failed {', '.join(failed)}" if failed else ""
    lines = ["Op checks (outputs and gradients vs float64, through autograd): "
             f"{len(checks) - len(failed)}/{len(checks)} passed{failures}.", ""]
    if data.get("models"):
        lines += [f"Compiled fused-op model vs reference backend, both bf16 autocast. Limits: loss {BF16_LOSS_RTOL:g} "
                  f"relative; all gradients ‖ΔG‖/‖G‖ ≤ {BF16_GLOBAL_GRAD_RTOL:g}; at most "
                  f"{BF16_PARAMETERS_OVER_SHARE:.0%} of the parameter tensors over {BF16_PARAMETER_GRAD_RTOL:g}. "
                  "bf16 vs fp32 (reference backend) shows what bf16 itself changes in a binary network.", "",
                  "| model | batch × px | loss error | gradient error | tensors over | worst tensor | bf16 vs fp32 | "
                  "first step s | result |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for item in data["models"]:
            grads = item["gradients"]
            worst = grads["worst"][0] if grads["worst"] else None
            worst_text = f"{worst['parameter']} ({worst['error']:.3f})" if worst else "—"
            lines.append(f"| {item['model']} | {item['batch']} × {item['resolution']} | "
                         f"{item['loss']['relative_error']:.1e} | {grads['relative_error']:.4f} | "
                         f"{len(grads['parameters_over'])}/{grads['parameters']} | {worst_text} | "
                         f"{grads['bf16_vs_fp32']:.3f} | {item['first_step_s']:.1f} | "
                         f"{'ok' if item['passed'] else '**FAIL**'} |")
    return "\n".join(lines) + "\n"


STAGE = Stage("correctness", "b. Correctness on the device", correctness, correctness_table, budget_s=150,
              tiny_budget_s=600)
