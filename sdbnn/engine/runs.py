"""Reading a run directory back: the one place that knows its files and the ablation layout of several runs.

A run (what `Trainer` writes into ``output_dir``) holds ``config.yaml`` (the resolved config), ``metrics.jsonl`` (one
record per epoch), ``checkpoint.pt`` (to resume from), and once finished ``summary.json`` and ``model.safetensors``.
Several runs of one comparison live in ``<root>/<variant>/seed<N>/`` (`run_directory`), as ``launch/ablations.py``
writes them.

    run = Run("runs/my_run")
    run.config(), run.records(), run.summary(), run.model()      # TrainConfig, epoch records, dict, eval-mode model
    finished_runs(root)                                          # {(variant, seed): Run} of an ablation root
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sdbnn.checkpoints import CheckpointError, load_state_dict_file

CONFIG, METRICS, SUMMARY, WEIGHTS = "config.yaml", "metrics.jsonl", "summary.json", "model.safetensors"
CHECKPOINT = "checkpoint.pt"  # the training state of an unfinished run (sdbnn.engine.state)
_SEED_FOLDER = re.compile(r"seed(\d+)")


class Run:
    """One run directory. Each reader raises FileNotFoundError naming the directory and the missing file."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"Run({str(self.directory)!r})"

    @property
    def finished(self) -> bool:
        """Whether training ended: the Trainer writes summary.json last."""
        return (self.directory / SUMMARY).is_file()

    @property
    def resumable(self) -> bool:
        """Whether an interrupted run left a training checkpoint to resume from."""
        return (self.directory / CHECKPOINT).is_file()

    def path(self, name: str, what: str = "a run directory") -> Path:
        path = self.directory / name
        if not path.is_file():
            raise FileNotFoundError(f"{self.directory} is not {what}: {name} is missing")
        return path

    def config_values(self) -> dict:
        """config.yaml as written (plain values, no defaults filled in)."""
        import yaml

        return yaml.safe_load(self.path(CONFIG).read_text()) or {}

    def config(self):
        """The run's TrainConfig."""
        from sdbnn.engine.config import TrainConfig

        return TrainConfig.from_dict(self.config_values())

    def records(self) -> list[dict]:
        """The per-epoch metrics records, in order (empty before the first epoch ends)."""
        from sdbnn.engine.metrics import MetricsLog

        return MetricsLog.load(self.directory).records

    def summary(self) -> dict:
        """summary.json of a finished run: final and best records, precision, environment, cost."""
        return json.loads(self.path(SUMMARY, "a finished run").read_text())

    def weights(self) -> dict:
        """The trained weights (model.safetensors) as a state dict on the CPU."""
        return load_state_dict_file(self.path(WEIGHTS, "a finished run directory"))

    def model(self):
        """The trained model of the run's config with its weights loaded, in eval mode; CheckpointError when the
        weights do not fit the config's architecture."""
        from sdbnn.models import create_model

        config = self.config()
        weights = self.weights()
        model = create_model(config.model, **config.model_options)
        try:
            model.load_state_dict(weights)
        except RuntimeError as error:
            raise CheckpointError(f"{self.directory / WEIGHTS} does not fit {config.model} with "
                                  f"{config.model_options}: {error}") from None
        return model.eval()


def run_directory(root: str | Path, variant: str, seed: int) -> Path:
    """Where the run of ``variant`` with ``seed`` lives under an ablation root."""
    return Path(root) / variant / f"seed{seed}"


def finished_runs(root: str | Path) -> dict[tuple[str, int], Run]:
    """{(variant, seed): Run} of every finished run under an ablation root, sorted by variant, then seed."""
    found = {}
    for summary in Path(root).glob(f"*/seed*/{SUMMARY}"):
        seed_folder = summary.parent
        match = _SEED_FOLDER.fullmatch(seed_folder.name)
        if match:
            found[(seed_folder.parent.name, int(match.group(1)))] = Run(seed_folder)
    return dict(sorted(found.items()))
