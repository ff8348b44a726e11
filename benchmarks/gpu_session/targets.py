"""What this run measured against what was expected: f. the training stage's steps (and one profiled ResNet-20
step's kernels) against `benchmarks.cuda_graph`'s predictions made without a GPU, and the README's targets."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.common import Section, log, table
from benchmarks.gpu_session.plan import COMPILE_S, Session, Stage

RESULTS = Path(__file__).resolve().parents[1] / "results"
PREDICTED = {"sdbnn": lambda row: row["predicted_step_ms"],  # training-stage variant -> predicted ms of its step
             "full_precision": lambda row: row["fp_twin"]["time_ms"],
             "reference_fp32": lambda row: row["eager_reference_fp32"]["time_ms"]}
# the README's GPU targets: (what, goal, direction), in the order `targets` measures them
GOALS = [
    ("fused op fwd+bwd, share of copy bandwidth (tensors ≥ 25 MB, worst case)", 0.8, ">="),
    ("fused op fwd+bwd vs Inductor-compiled reference (tensors ≥ 25 MB, worst case)", 1.5, ">="),
    ("resnet18_imagenet step vs full-precision twin", 0.9, ">="),
    ("resnet18_imagenet step vs eager fp32 reference", 5.0, ">="),
    ("ResNet-20 500-epoch recipe projected, minutes (best variant)", 10.0, "<="),
]


def predicted_rows() -> tuple[str | None, dict]:
    """(files, {model: its bf16 sm_90 row}) from the cuda-graph results, a newer file's row replacing an older one's.
    Sorted by stem, a follow-up named after its run (``cuda-graph-DATE-traced-backward``) comes after that run."""
    files = sorted(RESULTS.glob("cuda-graph-*.json"), key=lambda path: path.stem)
    rows = {}
    for path in files:
        rows.update({row["model"]: row for row in json.loads(path.read_text())["rows"]
                     if row.get("precision") == "bf16" and row.get("arch") == "sm_90" and "error" not in row})
    return (", ".join(path.name for path in files) or None), rows


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

    plan, device, cuda = session.plan, session.device, session.device.type == "cuda"
    prepared = training.prepare("resnet20", plan.model_cases["resnet20"], "sdbnn", device,
                                compile_backend=plan.compile_backend, autocast=True)
    images, labels = prepared.batches[0]
    for _ in range(2):
        training.step(prepared, images, labels)
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as profiler:
        training.step(prepared, images, labels)
        if cuda:
            torch.cuda.synchronize()
    expected, measured = {}, {}
    for graph in row["graph_costs"].values():
        for name, kernel in graph["per_kernel"].items():
            expected[name] = expected.get(name, 0.0) + kernel["predicted_us"] * kernel["launches"]
    for event in profiler.key_averages():  # on CUDA the kernels themselves (device events), not the ops above them
        if cuda and event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        measured[event.key] = measured.get(event.key, 0.0) + (event.self_device_time_total if cuda
                                                              else event.cpu_time_total)
    training.release(prepared)
    return [{"kernel": name, "measured_us": us, "predicted_us": expected.get(name)}
            for name, us in sorted(measured.items(), key=lambda item: -item[1])[:top]]


def predictions_table(data: dict) -> str:
    text = (f"Predicted by `benchmarks.cuda_graph` ({data.get('source') or 'no prediction file'}), H100.\n\n"
            + table(["model", "variant", "batch (predicted at)", "measured ms", "predicted ms", "measured ÷ predicted"],
                    [[row["model"], row["variant"], f"{row['batch']} ({row['predicted_batch']})",
                      f"{row['measured_ms']:.3f}", f"{row['predicted_ms']:.3f}",
                      f"{row['measured_over_predicted']:.2f}"]
                     for row in data.get("rows", [])]))
    if data.get("kernels"):
        text += "\n" + table(["kernel (one ResNet-20 step)", "measured µs", "predicted µs"],
                             [[kernel["kernel"][:80], f"{kernel['measured_us']:.1f}",
                               "—" if kernel["predicted_us"] is None else f"{kernel['predicted_us']:.1f}"]
                              for kernel in data["kernels"]])
    return text


def targets(section: Section, session: Session) -> None:
    """The README's targets against this run's numbers (None where the measurement is missing)."""
    rows = session.stage_data("fused_ops").get("rows", [])
    large = [row for row in rows if row["provider"] == "fused" and row["bytes_forward"] / 2 >= 25e6]
    training_rows = {(row["model"], row["variant"]): row for row in session.stage_data("training").get("rows", [])}
    sd18 = training_rows.get(("resnet18_imagenet", "sdbnn"), {})
    projected = [training_rows[key]["projected_schedule_min"] for key in
                 (("resnet20", "sdbnn"), ("resnet20", "sdbnn_cudagraphs"))
                 if "projected_schedule_min" in training_rows.get(key, {})]

    def worst(values):  # the smallest ratio; the smallest projected time is the best variant's
        return min(values) if values else None

    measured = [
        worst([row["copy_fraction_forward_backward"] for row in large]),
        worst([row["speedup_vs"]["compiled"] for row in large if "compiled" in row["speedup_vs"]]),
        sd18.get("ratio_to_full_precision"),
        sd18.get("speedup_vs_reference_fp32"),
        worst(projected),
    ]
    section.data["targets"] = [
        {"target": name, "goal": f"{sign} {goal:g}", "measured": value,
         "met": None if value is None else (value >= goal if sign == ">=" else value <= goal)}
        for (name, goal, sign), value in zip(GOALS, measured, strict=True)]
    if session.plan.tiny:
        section.data["note"] = "CPU tiny run: the numbers mean nothing; this checks the bookkeeping"


def targets_table(data: dict) -> str:
    return table(["target", "goal", "measured", "met"],
                 [[item["target"], item["goal"],
                   "not measured" if item["measured"] is None else f"{item['measured']:.2f}",
                   "—" if item["met"] is None else ("yes" if item["met"] else "**no**")]
                  for item in data.get("targets", [])])


PREDICTIONS = Stage("predictions", "f. Predictions", predictions_stage, predictions_table, budget_s=5,
                    tiny_budget_s=120)
TARGETS = Stage("targets", "Targets", targets, targets_table, budget_s=5, tiny_budget_s=60)
