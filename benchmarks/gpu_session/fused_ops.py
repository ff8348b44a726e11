"""c. Fused ops: Triton vs the eager reference vs the Inductor-compiled reference on the ResNet-18 layers (bf16,
channels_last; NCHW for one; the largest fp32 weight), forward+backward GB/s next to the copy bandwidth measured
in the same run (`benchmarks.kernels` measures; this stage picks the cases)."""

from __future__ import annotations

import torch

from benchmarks.common import Section
from benchmarks.gpu_session.plan import Plan, Session, Stage

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
    jobs = [("act_sign", case, torch.bfloat16) for case in cases]
    jobs.append(("weight_sign", ("resnet18.layer4", (batch, *last), (last[0], last[0], 3, 3), "nchw"),
                 torch.float32))
    return jobs


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

    lines = ["", "Launch configurations measured (the launchers' choices; compare `benchmarks.kernel_resources`):", ""]
    for job in data.get("launch_configs", []):
        for item in job["launches"]:
            constexprs = ", ".join(f"{key}={value}" for key, value in item["constexprs"].items())
            lines.append(f"- {job['case']} {job['layout']} {job['dtype']}: `{item['kernel']}` grid {item['grid']}, "
                         f"{item['num_warps']} warps, {constexprs}")
    return kernels.markdown_table(data) + ("\n".join(lines) + "\n" if data.get("launch_configs") else "")


STAGE = Stage("fused_ops", "c. Fused ops", fused_ops, fused_ops_table, budget_s=40, tiny_budget_s=300)
