"""The README's targets against this run's numbers (a GPU session's steps against the CUDA-graph study's
predictions: `python -m studies.predictions`)."""

from __future__ import annotations

from benchmarks.common import Section, table
from benchmarks.gpu_session.plan import Session, Stage

# the README's GPU targets: (what, goal, direction), in the order `targets` measures them
GOALS = [
    ("fused op fwd+bwd, share of copy bandwidth (tensors ≥ 25 MB, worst case)", 0.8, ">="),
    ("fused op fwd+bwd vs Inductor-compiled reference (tensors ≥ 25 MB, worst case)", 1.5, ">="),
    ("resnet18_imagenet step vs full-precision twin", 0.9, ">="),
    ("resnet18_imagenet step vs eager fp32 reference", 5.0, ">="),
    ("ResNet-20 500-epoch recipe projected, minutes (best variant)", 10.0, "<="),
]


def targets(section: Section, session: Session) -> None:
    """The README's targets against this run's numbers (None where the measurement is missing)."""
    rows = session.stage_data("fused_ops").get("rows", [])
    large = [row for row in rows if row["provider"] == "fused" and row["bytes_forward"] / 2 >= 25e6]
    training_rows = {(row["model"], row["variant"]): row for row in session.stage_data("training").get("rows", [])}
    sd18 = training_rows.get(("resnet18_imagenet", "sdbnn"), {})
    projected = [training_rows.get(("resnet20", variant), {}).get("projected_schedule_min")
                 for variant in ("sdbnn", "sdbnn_cudagraphs")]
    measured = [  # the worst ratio; the best variant's projected time
        min((row["copy_fraction_forward_backward"] for row in large), default=None),
        min((row["speedup_vs"]["compiled"] for row in large if "compiled" in row["speedup_vs"]), default=None),
        sd18.get("ratio_to_full_precision"),
        sd18.get("speedup_vs_reference_fp32"),
        min((minutes for minutes in projected if minutes is not None), default=None),
    ]
    section.data["targets"] = [
        {"target": name, "goal": f"{sign} {goal:g}", "measured": value,
         "met": None if value is None else (value >= goal if sign == ">=" else value <= goal)}
        for (name, goal, sign), value in zip(GOALS, measured, strict=True)]


def targets_table(data: dict) -> str:
    return table(["target", "goal", "measured", "met"],
                 [[item["target"], item["goal"],
                   "not measured" if item["measured"] is None else f"{item['measured']:.2f}",
                   "—" if item["met"] is None else ("yes" if item["met"] else "**no**")]
                  for item in data.get("targets", [])])


TARGETS = Stage("targets", "Targets", targets, targets_table, (5, 60))
