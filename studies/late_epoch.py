"""The late-epoch collapse study (docs/method.md §Late-epoch collapse): one table over several ablation roots.

Each root is what ``launch/ablations.py`` wrote for one setting (dataset × schedule), with variants such as the
paper's recipe and a fix; this script adds what the ablation table alone cannot show and writes the study's results:

- per setting and variant: final and best top-1 (mean ± std over seeds), best − final, Welch's test against the
  paper recipe (from ``sdbnn.engine.ablations.collect``);
- a control, per run: the final weights with BatchNorm's running statistics re-estimated over the training set
  (``Trainer.recalibrate_batchnorm``). Training is untouched, so this separates "stale BatchNorm statistics" from
  "the weights themselves broke";
- for roots trained with ``--diagnostics``: the last epochs' gradient norm, weight sign flips, train- vs eval-mode
  top-1 on one held-out batch and the BatchNorm gap, mean over seeds.

    python -m studies.late_epoch runs/study/digits15 runs/study/digits30 runs/study/mnist15 \\
        --out studies/results/late-epoch

Writes ``late-epoch.{json,md}`` and copies each root's ``ablations.md`` and plots as ``<root name>-*``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import torch

from sdbnn.engine.ablations import collect, describe, mean_std, versus
from sdbnn.engine.runs import Run, finished_runs, run_directory
from sdbnn.io import atomic_write

DIAGNOSTIC_KEYS = ("grad_norm_median", "grad_norm_max", "weight_flip_fraction", "train_mode_top1", "eval_mode_top1",
                   "bn_mean_gap", "act_band_fraction")
LAST_EPOCHS = 4


def recalibrated_final(run: Run) -> dict:
    """Held-out top-1 of a finished run's final weights, as trained and with BatchNorm statistics re-estimated."""
    from sdbnn.engine.config import TrainConfig
    from sdbnn.engine.trainer import Trainer

    with tempfile.TemporaryDirectory() as scratch:  # the Trainer writes nothing here: it never fits
        config = TrainConfig.from_dict({**run.config_values(), "output_dir": scratch, "diagnostics": False})
        trainer = Trainer(config)
        trainer.model.load_state_dict(run.weights())
        as_trained = trainer.evaluate()["val_top1"]
        trainer.recalibrate_batchnorm(config.epochs - 1)  # over the last epoch's batches, as the run saw them
        recalibrated = trainer.evaluate()["val_top1"]
    return {"final_top1": as_trained, "recalibrated_top1": recalibrated}


def last_epochs(root: Path, variant: str, seeds: list[int]) -> list[dict] | None:
    """Mean over seeds of the diagnostics of the last epochs (None when the runs recorded none)."""
    runs = [records for seed in seeds if (records := Run(run_directory(root, variant, seed)).records())]
    if not runs or "grad_norm_median" not in runs[0][-1]:
        return None
    epochs = len(runs[0])
    rows = []
    for epoch in range(max(0, epochs - LAST_EPOCHS), epochs):
        records = [run[epoch] for run in runs if len(run) > epoch]
        row = {"epoch": epoch, "t": records[0]["t"], "k": records[0]["k"], "lr": records[0]["lr"]}
        row.update({key: statistics.fmean(r[key] for r in records) for key in DIAGNOSTIC_KEYS})
        row["val_top1"] = statistics.fmean(r["val_top1"] for r in records)
        rows.append(row)
    return rows


def study(roots: list[Path], baseline: str = "paper") -> dict:
    settings = {}
    for root in roots:
        runs = finished_runs(root)
        variants = sorted({variant for variant, _ in runs})
        seeds = sorted({seed for _, seed in runs})
        table = collect(root, variants, seeds, baseline)
        for variant, row in table.items():
            controls = [recalibrated_final(runs[variant, r["seed"]]) for r in row["runs"]]
            for run, control in zip(row["runs"], controls):
                if abs(control["final_top1"] - run["final_top1"]) > 1e-9:  # same weights, same threads: same signs
                    raise RuntimeError(f"{root / variant} seed {run['seed']}: the final weights score "
                                       f"{control['final_top1']:.4f}, the run logged {run['final_top1']:.4f} "
                                       "(another thread count than the run's?)")
                run["recalibrated_top1"] = control["recalibrated_top1"]
            row["recalibrated_mean"], row["recalibrated_std"] = mean_std([r["recalibrated_top1"] for r in row["runs"]])
            row["last_epochs"] = last_epochs(root, variant, seeds)
        settings[root.name] = {"setup": describe(root), "variants": table}
    return {"baseline": baseline, "settings": settings}


def percent(mean: float, std: float) -> str:
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def markdown(result: dict) -> str:
    baseline = result["baseline"]
    lines = [
        "# Late-epoch collapse: the paper's EDE schedule against the fix",
        "",
        "Held-out top-1 (%), mean ± sample std over seeds. *final*: last epoch; *best*: best epoch; *best − final*:",
        "what the last epochs lost; *final, BN re-estimated*: the final weights with BatchNorm running statistics",
        "re-estimated over the training set (a control: same weights, fresh statistics). Against "
        f"`{baseline}`: difference of means in points and Welch's two-sided p-value.",
        "",
        f"| setting | variant | seeds | final | vs {baseline} | best | vs {baseline} | best − final "
        "| final, BN re-estimated |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, setting in result["settings"].items():
        for variant, row in setting["variants"].items():
            lines.append(f"| {name} | {variant} | {len(row['runs'])} | {percent(row['final_mean'], row['final_std'])} "
                         f"| {versus(row, 'final')} | {percent(row['best_mean'], row['best_std'])} "
                         f"| {versus(row, 'best')} | {percent(row['drop_mean'], row['drop_std'])} "
                         f"| {percent(row['recalibrated_mean'], row['recalibrated_std'])} |")
    lines += ["", "Settings:", ""]
    lines += [f"- {name}: {setting['setup']}" for name, setting in result["settings"].items()]
    for name, setting in result["settings"].items():
        for variant, row in setting["variants"].items():
            if not row["last_epochs"]:
                continue
            lines += ["", f"## Diagnostics, last epochs — {name}, {variant} (mean over {len(row['runs'])} seeds)", "",
                      "| epoch | t | k·t | lr | grad norm median | grad norm max | binary weights flipped (%) | "
                      "train-mode top-1 | eval-mode top-1 | BN mean gap | held-out top-1 |",
                      "|---|---|---|---|---|---|---|---|---|---|---|"]
            for e in row["last_epochs"]:
                lines.append(f"| {e['epoch'] + 1} | {e['t']:.3g} | {e['k'] * e['t']:.3g} | {e['lr']:.2g} "
                             f"| {e['grad_norm_median']:.3g} | {e['grad_norm_max']:.3g} "
                             f"| {100 * e['weight_flip_fraction']:.2f} | {100 * e['train_mode_top1']:.1f} "
                             f"| {100 * e['eval_mode_top1']:.1f} | {e['bn_mean_gap']:.3f} | {100 * e['val_top1']:.1f} |")
    lines += ["", "Per seed (final / best / final with BN re-estimated):", ""]
    for name, setting in result["settings"].items():
        for variant, row in setting["variants"].items():
            runs = ", ".join(f"s{r['seed']} {100 * r['final_top1']:.1f} / {100 * r['best_top1']:.1f} / "
                             f"{100 * r['recalibrated_top1']:.1f}" for r in row["runs"])
            lines.append(f"- {name}, {variant}: {runs}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studies.late_epoch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", nargs="+", type=Path, help="ablation output directories, one per setting")
    parser.add_argument("--baseline", default="paper", help="the variant the others are compared with")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads; the runs' own count (default 1)")
    args = parser.parse_args(argv)
    for root in args.roots:
        if not finished_runs(root):
            parser.error(f"{root} holds no finished ablation run (<root>/<variant>/seed<N>/summary.json)")
    os.environ.setdefault("TQDM_DISABLE", "1")
    torch.set_num_threads(args.threads)  # the thread count decides float sums, so signs: use the runs' own
    result = study(args.roots, args.baseline)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "late-epoch.json", lambda tmp: tmp.write_text(json.dumps(result, indent=2) + "\n"))
    text = markdown(result)
    atomic_write(args.out / "late-epoch.md", lambda tmp: tmp.write_text(text))
    for root in args.roots:
        for name in ("ablations.md", "ablations.png", "ablations_curves.png"):
            if (root / name).is_file():
                shutil.copyfile(root / name, args.out / f"{root.name}-{name}")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
