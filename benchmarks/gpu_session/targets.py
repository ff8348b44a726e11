"""The README's targets against what this run measured (None where a measurement is missing)."""

from __future__ import annotations

from benchmarks.common import Section
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
    items = [(*goal, value) for goal, value in zip(GOALS, measured, strict=True)]
    section.data["targets"] = [
        {"target": name, "goal": f"{sign} {goal:g}", "measured": value,
         "met": None if value is None else (value >= goal if sign == ">=" else value <= goal)}
        for name, goal, sign, value in items]
    if session.plan.tiny:
        section.data["note"] = "CPU tiny run: the numbers mean nothing; this checks the bookkeeping"


def targets_table(data: dict) -> str:
    note = f"{data['note']}.\n\n" if data.get("note") else ""
    lines = ["| target | goal | measured | met |", "|---|---|---|---|"]
    for item in data.get("targets", []):
        measured = "not measured" if item["measured"] is None else f"{item['measured']:.2f}"
        met = "—" if item["met"] is None else ("yes" if item["met"] else "**no**")
        lines.append(f"| {item['target']} | {item['goal']} | {measured} | {met} |")
    return note + "\n".join(lines) + "\n"


STAGE = Stage("targets", "Targets", targets, targets_table, budget_s=5, tiny_budget_s=60)
