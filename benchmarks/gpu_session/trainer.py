"""e. Trainer: the real Trainer, 2 epochs of synthetic CIFAR kept on the device, in this process (accelerate launch
would start a second CUDA context and recompile from nothing): its img/s next to the bare compiled step's."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks.common import Section, log, rate_text
from benchmarks.gpu_session.plan import Session, Stage

BATCH = (128, 16)  # (GPU, tiny)
MAX_IMAGES = (None, 64)  # (GPU: the whole synthetic set, tiny)
COMPILE = (True, False)  # the tiny run skips compile: Inductor on 2 cores would dominate
TRAINER_S = 30  # the two epochs on the GPU, compilation included


def trainer_stage(section: Section, session: Session) -> None:
    from sdbnn.engine.config import TrainConfig
    from sdbnn.engine.runs import Run
    from sdbnn.engine.trainer import Trainer

    plan, data = session.plan, section.data
    if not section.allows("Trainer run", plan.estimate(TRAINER_S)):
        return
    with tempfile.TemporaryDirectory() as scratch:
        config = TrainConfig(model="resnet20", dataset="synthetic", epochs=2, batch_size=plan.pick(*BATCH),
                             compile=plan.pick(*COMPILE), compile_mode=None, output_dir=str(Path(scratch) / "run"),
                             max_images=plan.pick(*MAX_IMAGES))
        data["config"] = {"model": config.model, "dataset": config.dataset, "epochs": config.epochs,
                          "batch_size": config.batch_size, "compile": config.compile,
                          "max_images": config.max_images, "in_process": True}
        if plan.tiny:
            data["note"] = "CPU tiny run: the Trainer runs without compile (Inductor on 2 cores would dominate)"
        started = time.perf_counter()
        Trainer(config).fit()
        data["seconds_fit"] = round(time.perf_counter() - started, 2)
        records = Run(config.output_dir).records()
    data["epochs"] = records
    measured = records[-1]  # the second epoch: the first includes compilation
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
    def number(key, fmt=None):
        if data.get(key) is None:
            return "—"
        return format(data[key], fmt) if fmt else rate_text(data[key])

    note = f"{data['note']}.\n\n" if data.get("note") else ""
    return (note + "| Trainer train img/s (epoch 2) | Trainer img/s incl. evaluation | bare compiled step img/s | "
            "Trainer ÷ bare step |\n|---|---|---|---|\n"
            f"| {number('train_images_per_s')} | {number('images_per_s')} | {number('bare_step_images_per_s')} | "
            f"{number('trainer_over_bare_step', '.2f')} |\n")


STAGE = Stage("trainer", "e. Trainer", trainer_stage, trainer_table, budget_s=35, tiny_budget_s=300)
