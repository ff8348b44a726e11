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
    """What the launchers choose for each job (kernel, grid, constexprs, num_warps), recorded on meta tensors: the
    configuration this stage measures, to read next to `benchmarks.kernel_resources`' predictions for it."""
    from sdbnn.kernels import act_sign, launches, weight_sign

    meta = torch.device("meta")
    k = t = torch.empty((), device=meta)
    described = []
    for op, (name, act_shape, weight_shape, layout), dtype in jobs:
        with launches.recording() as recorded:
            if op == "act_sign":
                x = torch.empty(act_shape, dtype=dtype, device=meta)
                x = x.to(memory_format=torch.channels_last) if layout == "nhwc" else x
                shift = torch.empty(act_shape[:2], dtype=dtype, device=meta)
                act_sign.forward(x, shift)
                act_sign.backward(torch.empty_like(x), x, shift, k, t, "ede")
            else:
                w = torch.empty(weight_shape, dtype=dtype, device=meta)
                alpha = torch.empty(weight_shape[:1], dtype=dtype, device=meta)
                weight_sign.forward(w, alpha)
                weight_sign.backward(torch.empty_like(w), w, alpha, k, t, "ede")
        described.append({"op": op, "case": name, "layout": layout, "dtype": str(dtype).removeprefix("torch."),
                          "launches": [item.config.describe() for item in recorded]})
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
