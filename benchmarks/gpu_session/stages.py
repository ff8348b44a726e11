"""The measuring stages of a GPU session, in the order they run (checks against expectations: `targets.py`). sdbnn is
imported inside the functions: a broken tree still gets the session's files, and each stage its traceback."""

from __future__ import annotations

import copy
import os
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import Section, log, rate_text, table
from benchmarks.gpu_session.plan import COMPILE_S, Plan, Session, Stage


# --- a. preflight: what the report's environment lacks: the device, the fused path, each Triton kernel's compile ----
def preflight(section: Section, session: Session) -> None:
    data, device = section.data, session.device
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        data["device"] = {"name": properties.name, "capability": f"{properties.major}.{properties.minor}",
                          "memory_gib": round(properties.total_memory / 2**30, 1),
                          "multiprocessors": properties.multi_processor_count, "cuda": torch.version.cuda,
                          "cudnn": torch.backends.cudnn.version()}
        if os.environ.get("TRITON_INTERPRET") == "1":  # interpreted kernels measure nothing (and fail on triton 3.6)
            raise RuntimeError("TRITON_INTERPRET=1 on a GPU machine; run through benchmarks/gpu_session.sh")

    import sdbnn.ops
    from sdbnn.testing import check_act_sign, check_weight_sign

    data["fused_path"] = sdbnn.ops.implementation(torch.empty(1, device=device))
    started = time.perf_counter()  # one act_sign and one weight_sign fwd+bwd against float64: compiles each kernel
    check_act_sign((2, 8, 5, 5), True, torch.bfloat16, "ede", device=device, through="op")
    check_weight_sign((8, 8, 3, 3), False, torch.float32, "approx", device=device, through="op",
                      out_dtype=torch.bfloat16)
    data["first_kernels_s"] = round(time.perf_counter() - started, 3)
    log(f"preflight: fused path {data['fused_path']}, first act_sign + weight_sign in {data['first_kernels_s']:.1f} s")


def preflight_table(data: dict) -> str:
    rows = [(f"device {key}", value) for key, value in data.get("device", {}).items()]
    if "first_kernels_s" in data:
        rows += [("fused path", data["fused_path"]),
                 ("first act_sign + weight_sign fwd+bwd (compiles)", f"{data['first_kernels_s']:.1f} s")]
    return table(["what", "value"], rows)


# --- b. correctness: both ops against float64, then the compiled models against the reference backend ---------------

ODD_ACT_SHAPE, ODD_WEIGHT_SHAPE = (3, 17, 13, 11), (24, 17, 5, 3)
CHECKS_S = (40, 150)  # (GPU, tiny) share of the stage's budget for the op checks (the models need the rest)


def kernel_check_matrix(plan: Plan) -> list[tuple]:
    """(op, shape, channels_last, dtype, surrogate, out_dtype): the training path on every layer (bf16 channels_last
    activations, fp32 weights giving bf16 signs), then odd shapes in both layouts: fp32 EDE, bf16 approx."""
    batch, bf16, fp32 = plan.pick(8, 2), torch.bfloat16, torch.float32
    checks = [("act_sign", (batch, *layer), True, bf16, "ede", None) for layer in plan.layers]
    checks += [("weight_sign", (channels, channels, 3, 3), True, fp32, "ede", bf16) for channels, _, _ in plan.layers]
    for dtype, surrogate in ((fp32, "ede"), (bf16, "approx")):
        for channels_last in (True, False):
            checks += [("act_sign", ODD_ACT_SHAPE, channels_last, dtype, surrogate, None),
                       ("weight_sign", ODD_WEIGHT_SHAPE, channels_last, dtype, surrogate, None)]
    return checks


def run_kernel_checks(section: Section, session: Session) -> None:
    from sdbnn import testing

    budget, results = section.budget.child(session.plan.pick(*CHECKS_S)), section.data.setdefault("kernel_checks", [])
    for op, shape, channels_last, dtype, surrogate, out_dtype in kernel_check_matrix(session.plan):
        dtypes = str(dtype).removeprefix("torch.") + (f"->{str(out_dtype).removeprefix('torch.')}" if out_dtype else "")
        label = f"{op} {tuple(shape)} {'nhwc' if channels_last else 'nchw'} {dtypes} {surrogate}"
        if not budget.allows(session.plan.estimate(2)):  # one op check on the GPU
            section.skip(label, "time budget of the op checks spent")
            continue
        started, passed = time.perf_counter(), False
        try:
            getattr(testing, f"check_{op}")(shape, channels_last, dtype, surrogate, device=session.device, through="op",
                                            **({"out_dtype": out_dtype} if out_dtype else {}))
            passed = True
        except Exception as error:  # noqa: BLE001 - a failing check is recorded and the next one runs
            section.error(label, error)
        results.append({"check": label, "passed": passed, "seconds": round(time.perf_counter() - started, 2)})
        section.save()
    log(f"correctness: {sum(result['passed'] for result in results)}/{len(results)} op checks passed so far")


def compare_model(name: str, session: Session) -> dict:
    """One training step's loss and gradients: the model compiled with the fused ops against the same weights on the
    reference backend, both bf16 autocast (fp32 reference: bf16's own effect). The compiled model is kept for d."""
    from benchmarks import training
    from sdbnn.testing import BF16_LOSS_RTOL, bf16_gradient_check, loss_and_gradients, spread_binary_weights

    plan, device, case = session.plan, session.device, session.plan.model_cases[name]
    model = training.build_model(name, "sdbnn", device)
    if name == "resnet18_imagenet":
        spread_binary_weights(model)
    reference_model = copy.deepcopy(model)
    prepared = training.prepare(name, case, "sdbnn", device, compile_backend=plan.compile_backend, autocast=True,
                                model=model)
    images, labels = prepared.batches[0]
    started = time.perf_counter()
    compiled_loss, compiled = loss_and_gradients(model, images, labels, forward=prepared.forward, autocast=True)
    prepared.first_step_s = time.perf_counter() - started  # its loss.item() waited for the device
    session.prepared[(name, "sdbnn")] = prepared
    reference_loss, reference = loss_and_gradients(reference_model, images, labels, backend="reference", autocast=True)
    fp32_loss, fp32 = loss_and_gradients(reference_model, images, labels, backend="reference")
    del reference_model
    training.release()
    loss_error = abs(compiled_loss - reference_loss) / max(abs(reference_loss), 1e-12)
    gradients = bf16_gradient_check(compiled, reference, fp32)
    log(f"correctness: {name} compiled vs reference, bf16: loss {loss_error:.1e}, gradients "
        f"{gradients['relative_error']:.4f} (bf16 vs fp32: {gradients['bf16_vs_fp32']:.3f})")
    return {"model": name, "batch": case[0], "resolution": case[1], "first_step_s": round(prepared.first_step_s, 2),
            "loss": {"compiled_bf16": compiled_loss, "reference_bf16": reference_loss, "reference_fp32": fp32_loss,
                     "relative_error": loss_error, "limit": BF16_LOSS_RTOL},
            "gradients": gradients, "passed": loss_error <= BF16_LOSS_RTOL and gradients["passed"]}


def correctness(section: Section, session: Session) -> None:
    run_kernel_checks(section, session)
    models = section.data.setdefault("models", [])
    for name in session.plan.model_cases:
        label = f"{name} compiled fused ops vs reference (bf16 autocast)"
        if not section.allows(label, session.plan.estimate(COMPILE_S[name])):
            continue
        try:
            models.append(compare_model(name, session))
            if not models[-1]["passed"]:
                raise AssertionError(f"{name}: compiled bf16 loss or gradients differ from the reference beyond the "
                                     "limits (see models[].gradients.worst)")
        except Exception as error:  # noqa: BLE001 - the next model still runs
            section.error(label, error)
        section.save()


def correctness_table(data: dict) -> str:
    checks = data.get("kernel_checks", [])
    failed = [check["check"] for check in checks if not check["passed"]]
    text = (f"Op checks (outputs and gradients vs float64, through autograd): {len(checks) - len(failed)}/{len(checks)}"
            f" passed{': failed ' + ', '.join(failed) if failed else ''}.\n")
    rows = []
    for item in data.get("models", []):
        grads = item["gradients"]
        worst = ", ".join(f"{worst['parameter']} ({worst['error']:.3f})" for worst in grads["worst"][:1]) or "—"
        rows.append([item["model"], f"{item['batch']} × {item['resolution']}", f"{item['loss']['relative_error']:.1e}",
                     f"{grads['relative_error']:.4f}", f"{len(grads['parameters_over'])}/{grads['parameters']}", worst,
                     f"{grads['bf16_vs_fp32']:.3f}", f"{item['first_step_s']:.1f}",
                     "ok" if item["passed"] else "**FAIL**"])
    return text + ("\nCompiled fused-op model vs reference backend, both bf16 autocast, within `sdbnn.testing`'s "
                   "BF16_* limits (docs/benchmarks.md); bf16 vs fp32: what bf16 itself changes in a binary network.\n\n"
                   + table(["model", "batch × px", "loss error", "gradient error", "tensors over", "worst tensor",
                            "bf16 vs fp32", "first step s", "result"], rows) if rows else "")


# --- c. fused ops: `benchmarks.kernels` on the ResNet-18 layers -----------------------------------------------------
def fused_op_jobs(plan: Plan) -> list[tuple]:
    """(op, case, dtype): every layer bf16 channels_last, the first also NCHW, the largest fp32 weight (optimizer's)."""
    cases = [(f"resnet18.layer{index + 1}", (plan.pick(256, 2), *layer), (layer[0], layer[0], 3, 3))
             for index, layer in enumerate(plan.layers)]
    return [*[("act_sign", (*case, "nhwc"), torch.bfloat16) for case in cases],
            ("act_sign", (*cases[0], "nchw"), torch.bfloat16), ("weight_sign", (*cases[-1], "nchw"), torch.float32)]


def fused_ops(section: Section, session: Session) -> None:
    from benchmarks import kernels

    plan = session.plan
    kernels.run(plan.tiny, session.device, "ede", jobs=fused_op_jobs(plan), compile_backend=plan.compile_backend,
                job_estimate_s=plan.estimate(10), section=section)  # a case: 3 providers, fwd and fwd+bwd


def fused_ops_table(data: dict) -> str:
    from benchmarks import kernels

    return kernels.markdown_table(data) + "\nLaunch configurations: `python -m benchmarks.kernel_resources`.\n"


# --- d. training step: `benchmarks.training` on the pairs the README's targets need, models from b reused ------------

# Priority order: the README's targets first (ResNet-18 vs eager fp32 and vs its twin, ResNet-20's schedule).
TRAINING_ORDER = [("resnet18_imagenet", "sdbnn"), ("resnet18_imagenet", "reference_fp32"),
                  ("resnet18_imagenet", "full_precision"), ("resnet20", "sdbnn"), ("resnet20", "sdbnn_cudagraphs"),
                  ("resnet18_imagenet", "reference_compiled")]
EAGER_S = {"resnet18_imagenet": 15}  # building and warming an eager model on the GPU
EVAL_COMPILE_S = 15  # the evaluation graph of a CIFAR model whose recipe is projected


def training_stage(section: Section, session: Session) -> None:
    from benchmarks import training

    plan = session.plan

    def estimate(model: str, variant: str, reused: bool) -> float:
        kind = training.VARIANTS[variant]
        seconds = 0.0 if reused else COMPILE_S[model] if kind.compiled else EAGER_S.get(model, 0)
        projected = plan.model_cases[model][3] and kind.binary and kind.backend == "ops"
        return plan.estimate(seconds + (EVAL_COMPILE_S if projected else 0))

    section.data["precision"] = "bf16 autocast"
    if plan.tiny:
        section.data["note"] = "CPU tiny run: CUDA graphs need CUDA, so the cudagraphs variant runs without them"
    training.run(plan.tiny, session.device, pairs=TRAINING_ORDER, cases=plan.model_cases, autocast=True,
                 compile_backend=plan.compile_backend, kept=session.prepared, estimate=estimate, section=section)


def training_table(data: dict) -> str:
    from benchmarks import training

    return training.markdown_table(data)


# --- e. the real Trainer: 2 epochs of synthetic CIFAR on the device, next to the bare step ---------------------------
def trainer_stage(section: Section, session: Session) -> None:
    """In this process: accelerate launch would start a second CUDA context and recompile from nothing."""
    from sdbnn.engine.config import TrainConfig
    from sdbnn.engine.runs import Run
    from sdbnn.engine.trainer import Trainer

    plan, data = session.plan, section.data
    if not section.allows("Trainer run", plan.estimate(30)):  # the two epochs on the GPU, compilation included
        return
    with tempfile.TemporaryDirectory() as scratch:
        config = TrainConfig(model="resnet20", dataset="synthetic", epochs=2, batch_size=plan.pick(128, 16),
                             compile=not plan.tiny, compile_mode=None, output_dir=str(Path(scratch) / "run"),
                             max_images=plan.pick(None, 64))  # GPU: the whole synthetic set
        data["config"] = {key: getattr(config, key)
                          for key in ("model", "dataset", "epochs", "batch_size", "compile", "max_images")}
        Trainer(config).fit()
        data["epochs"] = Run(config.output_dir).records()
    measured = data["epochs"][-1]  # the second epoch: the first includes compilation
    data.update(train_images_per_s=measured.get("train_images_per_s"), images_per_s=measured.get("images_per_s"))
    bare = next((row for row in session.stage_data("training").get("rows", [])
                 if row["model"] == "resnet20" and row["variant"] == "sdbnn"), None)
    if bare is not None and data["train_images_per_s"]:
        data.update(bare_step_images_per_s=bare["train_images_per_s"], bare_step_batch=bare["batch"],
                    trainer_over_bare_step=data["train_images_per_s"] / bare["train_images_per_s"])
    log(f"trainer: {rate_text(data['train_images_per_s'])} img/s training in epoch 2")


def trainer_table(data: dict) -> str:
    ratio = data.get("trainer_over_bare_step")
    return table(["Trainer train img/s (epoch 2)", "Trainer img/s incl. evaluation", "bare compiled step img/s",
                  "Trainer ÷ bare step"],
                 [[rate_text(data.get("train_images_per_s")), rate_text(data.get("images_per_s")),
                   rate_text(data.get("bare_step_images_per_s")), "—" if ratio is None else f"{ratio:.2f}"]])


# budgets in seconds: (GPU, tiny)
PREFLIGHT = Stage("preflight", "a. Preflight", preflight, preflight_table, (15, 300))
CORRECTNESS = Stage("correctness", "b. Correctness on the device", correctness, correctness_table, (150, 600))
FUSED_OPS = Stage("fused_ops", "c. Fused ops", fused_ops, fused_ops_table, (40, 300))
TRAINING = Stage("training", "d. Training step", training_stage, training_table, (100, 600))
TRAINER = Stage("trainer", "e. Trainer", trainer_stage, trainer_table, (35, 300))
