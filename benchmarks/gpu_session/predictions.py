"""f. Predictions: the training stage's measured steps against what `benchmarks.cuda_graph` predicted without a GPU
(the newest committed `benchmarks/results/cuda-graph-*.json`, bf16 sm_90 rows), and one profiled ResNet-20 step's
per-kernel times against the predicted ones, when earlier stages left the time for its compile."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.common import Section, log
from benchmarks.gpu_session.plan import COMPILE_S, Session, Stage

RESULTS = Path(__file__).resolve().parents[1] / "results"
PREDICTED = {"sdbnn": lambda row: row["predicted_step_ms"],  # training-stage variant -> predicted ms of its step
             "full_precision": lambda row: row["fp_twin"]["time_ms"],
             "reference_fp32": lambda row: row["eager_reference_fp32"]["time_ms"]}


def predicted_rows() -> tuple[str | None, dict]:
    """(file, {model: its bf16 sm_90 row}) from the newest cuda-graph result."""
    files = sorted(RESULTS.glob("cuda-graph-*.json"))
    if not files:
        return None, {}
    rows = json.loads(files[-1].read_text())["rows"]
    return files[-1].name, {row["model"]: row for row in rows
                            if row.get("precision") == "bf16" and row.get("arch") == "sm_90" and "error" not in row}


def predictions_stage(section: Section, session: Session) -> None:
    plan, data = session.plan, section.data
    source, predicted = predicted_rows()
    data.update(source=source, rows=[])
    if plan.tiny:
        data["note"] = ("CPU tiny run: tiny CPU batches against H100 predictions at the recipes' batches; this checks "
                        "the bookkeeping")
    for measured in session.stage_data("training").get("rows", []):
        row = predicted.get(measured["model"])
        if row is None or measured["variant"] not in PREDICTED or not measured.get("train_images_per_s"):
            continue
        measured_ms = 1e3 * measured["batch"] / measured["train_images_per_s"]
        predicted_ms = PREDICTED[measured["variant"]](row)
        data["rows"].append({"model": measured["model"], "variant": measured["variant"], "batch": measured["batch"],
                             "predicted_batch": row["batch"], "measured_ms": measured_ms, "predicted_ms": predicted_ms,
                             "measured_over_predicted": measured_ms / predicted_ms})
        log(f"predictions: {measured['model']} {measured['variant']}: measured {measured_ms:.2f} ms, predicted "
            f"{predicted_ms:.2f} ms ({measured_ms / predicted_ms:.2f}×)")
    if "resnet20" in predicted and section.allows("profiled resnet20 step", plan.estimate(COMPILE_S["resnet20"])):
        data["kernels"] = profiled_kernels(session, predicted["resnet20"])


def profiled_kernels(session: Session, row: dict, top: int = 15) -> list[dict]:
    """One compiled ResNet-20 step under the profiler: the device time of each Inductor kernel (summed over its
    launches) against its predicted time, the largest first."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from benchmarks import training

    plan, device = session.plan, session.device
    prepared = training.prepare("resnet20", plan.model_cases["resnet20"], "sdbnn", device,
                                compile_backend=plan.compile_backend, autocast=True)
    images, labels = prepared.batches[0]
    for _ in range(2):
        training.train_step(prepared, images, labels)
    activities = [ProfilerActivity.CUDA] if device.type == "cuda" else [ProfilerActivity.CPU]
    with profile(activities=activities) as profiler:
        training.train_step(prepared, images, labels)
        if device.type == "cuda":
            torch.cuda.synchronize()
    expected = {}
    for graph in row["graph_costs"].values():
        for name, kernel in graph["per_kernel"].items():
            expected[name] = expected.get(name, 0.0) + kernel["predicted_us"] * kernel["launches"]
    measured, cuda = {}, device.type == "cuda"
    for event in profiler.key_averages():  # on CUDA the kernels themselves (device events), not the ops above them
        if cuda and event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        us = event.self_device_time_total if cuda else event.cpu_time_total
        measured[event.key] = measured.get(event.key, 0.0) + us
    kernels = [{"kernel": name, "measured_us": us, "predicted_us": expected.get(name)}
               for name, us in sorted(measured.items(), key=lambda item: -item[1])[:top]]
    training.release(prepared)
    return kernels


def predictions_table(data: dict) -> str:
    note = f"{data['note']}.\n\n" if data.get("note") else ""
    lines = [f"Predicted by `benchmarks.cuda_graph` ({data.get('source') or 'no prediction file'}), H100.", "",
             "| model | variant | batch (predicted at) | measured ms | predicted ms | measured ÷ predicted |",
             "|---|---|---|---|---|---|"]
    for row in data.get("rows", []):
        lines.append(f"| {row['model']} | {row['variant']} | {row['batch']} ({row['predicted_batch']}) | "
                     f"{row['measured_ms']:.3f} | {row['predicted_ms']:.3f} | {row['measured_over_predicted']:.2f} |")
    if data.get("kernels"):
        lines += ["", "| kernel (one ResNet-20 step) | measured µs | predicted µs |", "|---|---|---|"]
        for kernel in data["kernels"]:
            predicted = "—" if kernel["predicted_us"] is None else format(kernel["predicted_us"], ".1f")
            lines.append(f"| {kernel['kernel'][:80]} | {kernel['measured_us']:.1f} | {predicted} |")
    return note + "\n".join(lines) + "\n"


STAGE = Stage("predictions", "f. Predictions", predictions_stage, predictions_table, budget_s=5, tiny_budget_s=120)
