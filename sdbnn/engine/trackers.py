"""Where the epoch metrics go besides ``metrics.jsonl`` (the run's record): Accelerate's trackers, picked by
``report_to`` (`TrainConfig.trackers`): TensorBoard into ``<output_dir>/tensorboard/sdbnn``, Weights & Biases (run
files in the run directory), MLflow (where MLFLOW_TRACKING_URI says, ./mlruns by default). Only the main process
writes."""

from __future__ import annotations

from pathlib import Path

PROJECT = "sdbnn"  # TensorBoard's folder below tensorboard/, the W&B project, the MLflow experiment
TRACKED = ("train_loss", "val_loss", "val_top1", "val_top5", "lr", "t", "images_per_s")  # what trackers get per epoch


def project_configuration(output_dir: Path):
    """Accelerate's project configuration of a run: TensorBoard writes into <logging_dir>/<project>."""
    from accelerate.utils import ProjectConfiguration

    return ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "tensorboard"))


def tracker_config(values: dict, prefix: str = "") -> dict:
    """A config as trackers take it (TensorBoard's hyperparameters: bool, int, float or str values): nested dicts
    flattened to ``outer.inner`` keys, anything else written as text."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(tracker_config(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value if isinstance(value, bool | int | float | str) else str(value)
    return flat


def start_trackers(accelerator, config, output_dir: Path) -> None:
    """Open the trackers of ``accelerator`` (built with ``log_with``) with the resolved config; the run is named
    after its directory."""
    accelerator.init_trackers(PROJECT, config=tracker_config(config.to_dict()),
                              init_kwargs={"wandb": {"name": output_dir.name, "dir": str(output_dir)},
                                           "mlflow": {"run_name": output_dir.name}})


def log_epoch(accelerator, record: dict) -> None:
    accelerator.log({key: record[key] for key in TRACKED}, step=record["epoch"])


def finish_trackers(accelerator) -> None:
    """Flush and close the trackers. Not `Accelerator.end_training`: that also destroys the process group, which the
    ImageNet launcher's second stage, trained in the same processes, still needs."""
    for tracker in accelerator.trackers:
        tracker.finish()  # on the main process only (Accelerate's decorator)
    accelerator.trackers.clear()
