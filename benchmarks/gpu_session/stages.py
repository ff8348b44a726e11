"""The measuring stages of a GPU session, in the order they run (the package docstring lists what each does; the
README's targets and the offline predictions are checked in `targets.py`). sdbnn is imported inside the functions:
a broken tree still gets the session's files, and preflight says what broke."""

from __future__ import annotations

import copy
import importlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import Budget, Section, log, rate_text, synchronize, table
from benchmarks.gpu_session.plan import COMPILE_S, Plan, Session, Stage

ROOT = Path(__file__).resolve().parents[2]

# --- a. preflight: versions, the device, imports, one compile of each Triton kernel ----------------------------------

REQUIRED_MODULES = ["sdbnn", "sdbnn.ops", "sdbnn.reference", "sdbnn.kernels.act_sign", "sdbnn.kernels.weight_sign",
                    "sdbnn.models", "sdbnn.engine.config", "sdbnn.engine.trainer", "sdbnn.pipelines.synthetic",
                    "benchmarks.kernels", "benchmarks.training", "sdbnn.testing", "accelerate", "einops",
                    "safetensors", "tqdm", "yaml", "matplotlib", "triton", "torch", "numpy"]
OPTIONAL_MODULES = ["torchvision", "sklearn"]  # their versions are recorded; a missing one is no failure


def preflight(section: Section, session: Session) -> None:
    data, device = section.data, session.device
    data.update(versions={"python": platform.python_version()}, imports={})
    for module in REQUIRED_MODULES + OPTIONAL_MODULES:
        try:
            version = getattr(importlib.import_module(module), "__version__", None)
            data["versions"].update({module: version} if version and "." not in module else {})
            data["imports"][module] = "ok"
        except Exception as error:  # noqa: BLE001 - every missing import is listed, not just the first
            data["versions"][module] = f"missing ({type(error).__name__})"
            if module in REQUIRED_MODULES:
                data["imports"][module] = f"{type(error).__name__}: {error}"
    data["environment"] = {key: os.environ.get(key)
                           for key in ("TRITON_INTERPRET", "PYTHONPATH", "CUDA_VISIBLE_DEVICES")}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        data["device"] = {"name": properties.name, "capability": f"{properties.major}.{properties.minor}",
                          "memory_gib": round(properties.total_memory / 2**30, 1),
                          "multiprocessors": properties.multi_processor_count, "cuda": torch.version.cuda,
                          "cudnn": torch.backends.cudnn.version()}
        try:
            data["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv"],
                capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError) as error:
            data["nvidia_smi"] = f"unavailable: {error}"
        if os.environ.get("TRITON_INTERPRET") == "1":
            raise RuntimeError("TRITON_INTERPRET=1 on a GPU machine: the kernels would run interpreted (and triton "
                               "3.6's interpreter fails there); run through benchmarks/gpu_session.sh")
    section.save()

    import sdbnn.ops
    from sdbnn.testing import check_act_sign, check_weight_sign

    data["fused_path"] = sdbnn.ops.implementation(torch.empty(1, device=device))
    started = time.perf_counter()  # one act_sign and one weight_sign fwd+bwd against float64: compiles each kernel
    check_act_sign((2, 8, 5, 5), True, torch.bfloat16, "ede", device=device, through="op")
    check_weight_sign((8, 8, 3, 3), False, torch.float32, "approx", device=device, through="op",
                      out_dtype=torch.bfloat16)
    data["first_kernels_s"] = round(time.perf_counter() - started, 2)
    log(f"preflight: fused path {data['fused_path']}, first act_sign + weight_sign fwd+bwd in "
        f"{data['first_kernels_s']:.1f} s")
    broken = {name: status for name, status in data["imports"].items() if status != "ok"}
    if broken:
        raise ImportError("missing modules: " + "; ".join(f"{name} ({error})" for name, error in broken.items()))


def preflight_table(data: dict) -> str:
    rows = [*data.get("versions", {}).items(),
            *((f"device {key}", value) for key, value in data.get("device", {}).items())]
    if "fused_path" in data:
        rows.append(("fused path", data["fused_path"]))
    if "first_kernels_s" in data:
        rows.append(("first act_sign + weight_sign fwd+bwd (compiles)", f"{data['first_kernels_s']:.1f} s"))
    broken = [f"{name}: {status}" for name, status in data.get("imports", {}).items() if status != "ok"]
    return table(["what", "value"], [*rows, ("imports", "; ".join(broken) or "all ok")])


# --- b. correctness: both ops against float64, then the compiled models against the reference backend ---------------

ODD_ACT_SHAPE, ODD_WEIGHT_SHAPE = (3, 17, 13, 11), (24, 17, 5, 3)
CHECK_BATCH = (8, 2)  # (GPU, tiny) batch of the activation checks
KERNEL_CHECK_S = 2  # one op check on the GPU
FIRST_CHECKS_S = (25, 150)  # (GPU, tiny) share of the stage's budget for the first op checks (the models need the rest)


def kernel_check_matrix(plan: Plan) -> tuple[list[tuple], list[tuple]]:
    """(op, shape, channels_last, dtype, surrogate, out_dtype) checks as (first, rest), in priority order: first the
    training path (bf16 channels_last activations, fp32 weights giving bf16 signs) and the odd shapes in fp32; the
    rest (NCHW bf16, approx, bf16 weights) after the model checks, with what time is left."""
    batch, bf16, fp32 = plan.pick(*CHECK_BATCH), torch.bfloat16, torch.float32
    acts = [(batch, *layer) for layer in plan.layers]
    weights = [(channels, channels, 3, 3) for channels, _, _ in plan.layers]
    first = [("act_sign", shape, True, bf16, "ede", None) for shape in acts]
    first += [("weight_sign", shape, True, fp32, "ede", bf16) for shape in weights]
    rest = [("act_sign", shape, False, bf16, "ede", None) for shape in acts]
    rest += [("weight_sign", shape, False, fp32, "ede", None) for shape in weights]
    for channels_last in (True, False):
        first += [("act_sign", ODD_ACT_SHAPE, channels_last, fp32, "ede", None),
                  ("weight_sign", ODD_WEIGHT_SHAPE, channels_last, fp32, "ede", None)]
        rest += [("act_sign", acts[0], channels_last, bf16, "approx", None),
                 ("act_sign", acts[-1], channels_last, fp32, "approx", None),
                 ("act_sign", ODD_ACT_SHAPE, channels_last, fp32, "approx", None),
                 ("weight_sign", weights[-1], channels_last, fp32, "approx", bf16),
                 ("weight_sign", ODD_WEIGHT_SHAPE, channels_last, bf16, "approx", None)]
    return first, rest


def run_kernel_checks(section: Section, session: Session, checks: list[tuple], budget: Budget) -> None:
    from sdbnn.testing import check_act_sign, check_weight_sign

    results = section.data.setdefault("kernel_checks", [])
    for op, shape, channels_last, dtype, surrogate, out_dtype in checks:
        dtypes = str(dtype).removeprefix("torch.") + (f"->{str(out_dtype).removeprefix('torch.')}" if out_dtype else "")
        label = f"{op} {tuple(shape)} {'nhwc' if channels_last else 'nchw'} {dtypes} {surrogate}"
        if not budget.allows(session.plan.estimate(KERNEL_CHECK_S)):
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
    log(f"correctness: {sum(result['passed'] for result in results)}/{len(results)} op checks passed so far")


def compare_model(name: str, session: Session) -> dict:
    """The model compiled with the fused ops vs the same weights on the reference backend, both under bf16 autocast,
    one training step's loss and gradients (`sdbnn.testing`'s check); the fp32 reference measures bf16's own effect.
    The compiled model is kept for the training stage (compiled once)."""
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
    synchronize(device)
    prepared.first_step_s = time.perf_counter() - started
    session.prepared[(name, "sdbnn")] = prepared
    reference_loss, reference = loss_and_gradients(reference_model, images, labels, backend="reference", autocast=True)
    fp32_loss, fp32 = loss_and_gradients(reference_model, images, labels, backend="reference")
    del reference_model
    training.release()

    loss_error = abs(compiled_loss - reference_loss) / max(abs(reference_loss), 1e-12)
    gradients = bf16_gradient_check(compiled, reference, fp32)
    result = {
        "model": name, "batch": case[0], "resolution": case[1], "compile_backend": plan.compile_backend,
        "first_step_s": round(prepared.first_step_s, 2),
        "loss": {"compiled_bf16": compiled_loss, "reference_bf16": reference_loss, "reference_fp32": fp32_loss,
                 "relative_error": loss_error, "limit": BF16_LOSS_RTOL},
        "gradients": gradients, "passed": loss_error <= BF16_LOSS_RTOL and gradients["passed"],
    }
    log(f"correctness: {name} compiled bf16 vs reference bf16: loss {loss_error:.1e}, gradients "
        f"{gradients['relative_error']:.4f}, {len(gradients['parameters_over'])}/{gradients['parameters']} tensors "
        f"over {BF16_PARAMETER_GRAD_RTOL:g} (bf16 vs fp32 reference: {gradients['bf16_vs_fp32']:.3f}) -> "
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
            models.append(compare_model(name, session))
            if not models[-1]["passed"]:
                raise AssertionError(f"{name}: compiled bf16 gradients differ from the reference beyond the limits "
                                     f"(see models[].gradients.worst)")
        except Exception as error:  # noqa: BLE001 - the next model still runs
            section.error(label, error)
        section.save()
    run_kernel_checks(section, session, rest, section.budget)


def correctness_table(data: dict) -> str:
    from sdbnn.testing import (BF16_GLOBAL_GRAD_RTOL, BF16_LOSS_RTOL, BF16_PARAMETER_GRAD_RTOL,
                               BF16_PARAMETERS_OVER_SHARE)

    checks = data.get("kernel_checks", [])
    failed = [check["check"] for check in checks if not check["passed"]]
    text = (f"Op checks (outputs and gradients vs float64, through autograd): {len(checks) - len(failed)}/{len(checks)}"
            f" passed{': failed ' + ', '.join(failed) if failed else ''}.\n")
    if not data.get("models"):
        return text
    rows = []
    for item in data["models"]:
        grads = item["gradients"]
        worst = f"{grads['worst'][0]['parameter']} ({grads['worst'][0]['error']:.3f})" if grads["worst"] else "—"
        rows.append([item["model"], f"{item['batch']} × {item['resolution']}", f"{item['loss']['relative_error']:.1e}",
                     f"{grads['relative_error']:.4f}", f"{len(grads['parameters_over'])}/{grads['parameters']}", worst,
                     f"{grads['bf16_vs_fp32']:.3f}", f"{item['first_step_s']:.1f}",
                     "ok" if item["passed"] else "**FAIL**"])
    return (f"{text}\nCompiled fused-op model vs reference backend, both bf16 autocast. Limits: loss "
            f"{BF16_LOSS_RTOL:g} relative; all gradients ‖ΔG‖/‖G‖ ≤ {BF16_GLOBAL_GRAD_RTOL:g}; at most "
            f"{BF16_PARAMETERS_OVER_SHARE:.0%} of the parameter tensors over {BF16_PARAMETER_GRAD_RTOL:g}. bf16 vs fp32 "
            "(reference backend) shows what bf16 itself changes in a binary network.\n\n"
            + table(["model", "batch × px", "loss error", "gradient error", "tensors over", "worst tensor",
                     "bf16 vs fp32", "first step s", "result"], rows))


# --- c. fused ops: `benchmarks.kernels` on the ResNet-18 layers, with the launch configurations measured ------------

OP_BATCH = (256, 2)  # (GPU, tiny) activation batch
OP_CASE_S = 10  # one case (three providers, forward and forward+backward) on the GPU


def fused_op_jobs(plan: Plan) -> list[tuple]:
    """(op, case, dtype) for benchmarks.kernels: every ResNet-18 layer bf16 channels_last, the first also NCHW, and
    the largest fp32 weight (what the optimizer holds)."""
    batch = plan.pick(*OP_BATCH)
    cases = [(f"resnet18.layer{index + 1}", (batch, *layer), (layer[0], layer[0], 3, 3), "nhwc")
             for index, layer in enumerate(plan.layers)]
    first, last = plan.layers[0], plan.layers[-1]
    cases.append(("resnet18.layer1", (batch, *first), (first[0], first[0], 3, 3), "nchw"))
    return [*[("act_sign", case, torch.bfloat16) for case in cases],
            ("weight_sign", ("resnet18.layer4", (batch, *last), (last[0], last[0], 3, 3), "nchw"), torch.float32)]


def launch_configs(jobs: list[tuple]) -> list[dict]:
    """What the launchers choose for each job (kernel, grid, constexprs, num_warps), recorded on meta tensors as
    `benchmarks.kernel_resources` records its sweep: the configuration this stage measures, to read next to that
    tool's predictions for it."""
    from benchmarks.kernel_resources import TRITON_TYPES, recorded_launches

    described = []
    for op, (name, act_shape, weight_shape, layout), dtype in jobs:
        storage = TRITON_TYPES[dtype]
        if op == "act_sign":
            launches = recorded_launches({act_shape: [name]}, {}, act_storage=(storage,),
                                         channels_last=(layout == "nhwc",), optional=(True,), surrogates=("ede",))
        else:
            launches = recorded_launches({}, {weight_shape: [name]}, weight_storage=((storage, storage),),
                                         optional=(True,), surrogates=("ede",))
        described.append({"op": op, "case": name, "layout": layout, "dtype": str(dtype).removeprefix("torch."),
                          "launches": [item.config.describe() for item, _ in launches]})
    return described


def fused_ops(section: Section, session: Session) -> None:
    from benchmarks import kernels

    plan = session.plan
    section.data["launch_configs"] = launch_configs(fused_op_jobs(plan))
    kernels.run(plan.tiny, session.device, "ede", jobs=fused_op_jobs(plan), compile_backend=plan.compile_backend,
                job_estimate_s=plan.estimate(OP_CASE_S), section=section)


def fused_ops_table(data: dict) -> str:
    from benchmarks import kernels

    lines = [f"- {job['case']} {job['layout']} {job['dtype']}: `{item['kernel']}` grid {item['grid']}, "
             f"{item['num_warps']} warps, " + ", ".join(f"{key}={value}" for key, value in item["constexprs"].items())
             for job in data.get("launch_configs", []) for item in job["launches"]]
    if not lines:
        return kernels.markdown_table(data)
    return (kernels.markdown_table(data) + "\nLaunch configurations measured (the launchers' choices; compare "
            "`benchmarks.kernel_resources`):\n\n" + "\n".join(lines) + "\n")


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
        seconds = 0.0 if reused else plan.estimate(COMPILE_S[model] if kind.compiled else EAGER_S.get(model, 0))
        if plan.model_cases[model][3] and kind.binary and kind.backend == "ops":
            seconds += plan.estimate(EVAL_COMPILE_S)
        return seconds

    section.data["precision"] = "bf16 autocast"
    if plan.tiny:
        section.data["note"] = (f"CPU tiny run: compiled with {plan.compile_backend}; CUDA graphs need CUDA, so the "
                                "cudagraphs variant runs without them")
    training.run(plan.tiny, session.device, pairs=TRAINING_ORDER, cases=plan.model_cases, autocast=True,
                 compile_backend=plan.compile_backend, kept=session.prepared, estimate=estimate, section=section)


def training_table(data: dict) -> str:
    from benchmarks import training

    return training.markdown_table(data)


# --- e. the real Trainer: 2 epochs of synthetic CIFAR on the device, next to the bare step ---------------------------

TRAINER_BATCH = (128, 16)  # (GPU, tiny)
TRAINER_MAX_IMAGES = (None, 64)  # (GPU: the whole synthetic set, tiny)
TRAINER_S = 30  # the two epochs on the GPU, compilation included


def trainer_stage(section: Section, session: Session) -> None:
    """In this process (accelerate launch would start a second CUDA context and recompile from nothing); the tiny run
    skips compile (Inductor on 2 cores would dominate)."""
    from sdbnn.engine.config import TrainConfig
    from sdbnn.engine.runs import Run
    from sdbnn.engine.trainer import Trainer

    plan, data = session.plan, section.data
    if not section.allows("Trainer run", plan.estimate(TRAINER_S)):
        return
    with tempfile.TemporaryDirectory() as scratch:
        config = TrainConfig(model="resnet20", dataset="synthetic", epochs=2, batch_size=plan.pick(*TRAINER_BATCH),
                             compile=not plan.tiny, compile_mode=None, output_dir=str(Path(scratch) / "run"),
                             max_images=plan.pick(*TRAINER_MAX_IMAGES))
        data["config"] = {"model": config.model, "dataset": config.dataset, "epochs": config.epochs,
                          "batch_size": config.batch_size, "compile": config.compile,
                          "max_images": config.max_images, "in_process": True}
        if plan.tiny:
            data["note"] = "CPU tiny run: the Trainer runs without compile (Inductor on 2 cores would dominate)"
        started = time.perf_counter()
        Trainer(config).fit()
        data["seconds_fit"] = round(time.perf_counter() - started, 2)
        data["epochs"] = Run(config.output_dir).records()
    measured = data["epochs"][-1]  # the second epoch: the first includes compilation
    data["train_images_per_s"] = measured.get("train_images_per_s")
    data["images_per_s"] = measured.get("images_per_s")
    bare = next((row for row in session.stage_data("training").get("rows", [])
                 if row["model"] == "resnet20" and row["variant"] == "sdbnn"), None)
    if bare is not None and data["train_images_per_s"]:
        data["bare_step_images_per_s"] = bare["train_images_per_s"]
        data["bare_step_batch"] = bare["batch"]
        data["trainer_over_bare_step"] = data["train_images_per_s"] / bare["train_images_per_s"]
    log(f"trainer: {rate_text(data['train_images_per_s'])} img/s training, {rate_text(data['images_per_s'])} img/s "
        f"with evaluation; bare compiled step {rate_text(data.get('bare_step_images_per_s'))} img/s")


def trainer_table(data: dict) -> str:
    ratio = data.get("trainer_over_bare_step")
    return table(["Trainer train img/s (epoch 2)", "Trainer img/s incl. evaluation", "bare compiled step img/s",
                  "Trainer ÷ bare step"],
                 [[rate_text(data.get("train_images_per_s")), rate_text(data.get("images_per_s")),
                   rate_text(data.get("bare_step_images_per_s")), "—" if ratio is None else f"{ratio:.2f}"]])


# --- `pytest -m gpu`, only when given a budget ----------------------------------------------------------------------

def gpu_tests(section: Section, session: Session) -> None:
    """tests/test_gpu.py (the kernel checks compiled for CUDA, whole models on the GPU), stopped at its budget."""
    if session.device.type != "cuda":
        section.data["note"] = "no CUDA device: nothing to run"
        return
    environment = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests/test_gpu.py"]
    try:
        result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True,
                                timeout=max(section.budget.remaining(), 1))
        section.data.update(returncode=result.returncode, output_tail=(result.stdout + result.stderr)[-4000:])
        if result.returncode != 0:
            raise AssertionError(f"pytest -m gpu exited {result.returncode}")
    except subprocess.TimeoutExpired as error:
        output = error.stdout.decode(errors="replace") if isinstance(error.stdout, bytes) else error.stdout or ""
        section.data.update(returncode=None, output_tail=output[-4000:])
        section.skip("the rest of pytest -m gpu", "stopped at the stage budget")


def gpu_tests_table(data: dict) -> str:
    return f"Exit status {data.get('returncode')}.\n\n```\n{data.get('output_tail', '').strip()}\n```\n"


PREFLIGHT = Stage("preflight", "a. Preflight", preflight, preflight_table, budget_s=15, tiny_budget_s=300)
CORRECTNESS = Stage("correctness", "b. Correctness on the device", correctness, correctness_table, budget_s=150,
                    tiny_budget_s=600)
FUSED_OPS = Stage("fused_ops", "c. Fused ops", fused_ops, fused_ops_table, budget_s=40, tiny_budget_s=300)
TRAINING = Stage("training", "d. Training step", training_stage, training_table, budget_s=100, tiny_budget_s=600)
TRAINER = Stage("trainer", "e. Trainer", trainer_stage, trainer_table, budget_s=35, tiny_budget_s=300)
GPU_TESTS = Stage("gpu_tests", "pytest -m gpu", gpu_tests, gpu_tests_table, budget_s=0, tiny_budget_s=0)
