"""Controlled comparisons: every variant × every seed through the CIFAR launcher, then a mean ± std table (with
Welch's t-test against a reference variant) and a plot. A variant is a set of launcher flags: the built-in ASD/WSD
ablations switch model parts, ``--variant NAME="FLAGS"`` defines any other (recipe options included).

    python launch/ablations.py --dataset digits --epochs 15 --batch-size 64 --seeds 0 1 2 3 4      # CPU, minutes
    accelerate launch launch/ablations.py --model resnet20 --data-dir ~/data --seeds 0 1 2        # paper recipe, GPU
    python launch/ablations.py --variant paper= --variant clip="--grad-clip-norm 5" --baseline paper \
        --dataset digits --epochs 15 --batch-size 64 --seeds 0 1 2 3 4                            # recipe options
    python launch/ablations.py --output-dir runs/ablations_digits_resnet20 --report-only          # table only

Built-in variants (the paper published none of these numbers):
  baseline        sign + EDE only (no ASD, no WSD)
  asd             + activation self-distribution (dynamic SE gate)
  wsd             + weight self-distribution
  asd+wsd         SD-BNN as published
  static_asd+wsd  SD-BNN with one learned shift per channel instead of the gate

Every other argument goes to launch/cifar.py unchanged (--model, --dataset, --epochs, --lr, ...). Each run lives in
<output-dir>/<variant>/seed<N>/; a finished run is reused and an interrupted one resumed, so the command can be
repeated until the table is complete. Writes <output-dir>/ablations.{json,md,png} and ablations_curves.png
(held-out top-1 per epoch, every seed and the mean).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

from sdbnn.engine import cli
from sdbnn.engine.runs import Run, finished_runs, run_directory
from sdbnn.io import atomic_write

# variant -> the CIFAR launcher's own ablation flags
VARIANTS = {
    "baseline": ["--no-asd", "--no-wsd"],
    "asd": ["--no-wsd"],
    "wsd": ["--no-asd"],
    "asd+wsd": [],
    "static_asd+wsd": ["--static-asd"],
}


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``NAME=FLAGS`` → (name, launcher flags); an empty FLAGS is the launcher's recipe as it is."""
    name, separator, flags = text.partition("=")
    if not separator or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"a variant is NAME=\"FLAGS\" (FLAGS may be empty), got {text!r}")
    return name, shlex.split(flags)


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
    # no abbreviations: unknown flags pass to the launcher, and --seed must not become --seeds
    parser = argparse.ArgumentParser(prog="launch/ablations.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                        help="built-in variants (default: all of them, unless --variant defines others)")
    parser.add_argument("--variant", type=parse_variant, action="append", default=[], metavar='NAME="FLAGS"',
                        help="a variant of your own: the launcher flags that define it (repeatable)")
    parser.add_argument("--baseline", help="the variant the others are compared with (default: 'baseline' when "
                                           "present, else the first variant)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--output-dir", type=Path, help="default: runs/ablations_<dataset>_<model>")
    parser.add_argument("--report-only", action="store_true", help="rebuild the table from finished runs")
    args, launcher_args = parser.parse_known_args(argv)
    for flag in ("--seed", "--output-dir", "--resume"):
        if flag in launcher_args:
            raise ValueError(f"{flag} is chosen by the ablation runner per run")
    args.definitions = {name: VARIANTS[name] for name in (args.variants or ([] if args.variant else VARIANTS))}
    for name, flags in args.variant:
        if name in args.definitions:
            raise ValueError(f"variant {name!r} is defined twice")
        args.definitions[name] = flags
    if args.baseline is None:
        args.baseline = "baseline" if "baseline" in args.definitions else next(iter(args.definitions))
    elif args.baseline not in args.definitions:
        raise ValueError(f"--baseline {args.baseline!r} is not one of the variants ({', '.join(args.definitions)})")
    return args, launcher_args


def variant_argv(launcher_args: list[str], flags: list[str], seed: int, directory: Path) -> list[str]:
    return [*launcher_args, *flags, "--seed", str(seed), "--output-dir", str(directory)]


def train_one(argv: list[str], variant: str, seed: int, directory: Path) -> None:
    """One launcher run; reuse it when finished, resume it when interrupted."""
    run = Run(directory)
    if run.finished:
        return
    if run.resumable:
        argv = [*argv, "--resume"]
    if cli.cifar_main(argv) != 0:
        raise RuntimeError(f"the {variant} run with seed {seed} failed (see its error above)")


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single run)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def collect(root: Path, variants: list[str], seeds: list[int], baseline: str = "baseline") -> dict:
    """Final and best top-1 of every finished run, mean ± std per variant, and each variant against ``baseline``."""
    table = {}
    for variant in variants:
        runs = []
        for seed in seeds:
            run = Run(run_directory(root, variant, seed))
            if run.finished:
                summary = run.summary()
                runs.append({"seed": seed, "final_top1": summary["final"]["val_top1"],
                             "best_top1": summary["best"]["val_top1"], "best_epoch": summary["best"]["epoch"],
                             "train_images_per_s": training_speed(run.records()),
                             "environment": summary.get("environment")})
        if not runs:
            continue
        final, best = (mean_std([r[key] for r in runs]) for key in ("final_top1", "best_top1"))
        drop = mean_std([r["best_top1"] - r["final_top1"] for r in runs])
        table[variant] = {"runs": runs, "final_mean": final[0], "final_std": final[1], "best_mean": best[0],
                          "best_std": best[1], "drop_mean": drop[0], "drop_std": drop[1],
                          "train_images_per_s": statistics.fmean(r["train_images_per_s"] for r in runs)}
    if baseline in table:
        for variant, row in table.items():
            if variant != baseline:
                row["vs_baseline"] = {which: compare_with(row["runs"], table[baseline]["runs"], f"{which}_top1")
                                      for which in ("final", "best")}
    return table


def training_speed(records: list[dict]) -> float:
    """A run's training-loop images per second: the mean over its epochs after the first (which pays warm-up)."""
    rates = [record["train_images_per_s"] for record in records]
    return statistics.fmean(rates[1:] or rates)


def provenance_lines(table: dict) -> list[str]:
    """Which commits and machines produced the runs (runs from before summaries recorded it say so)."""
    seen = {}
    for row in table.values():
        for run in row["runs"]:
            env = run.get("environment")
            key = ("unrecorded",) if env is None else (
                env["commit"], env["uncommitted_changes"], env["cpu_model"], env["cpu_cores"], env["torch_threads"],
                env["torch"], env.get("gpu"))
            seen[key] = seen.get(key, 0) + 1
    lines = []
    for key, count in seen.items():
        if key == ("unrecorded",):
            lines.append(f"- {count} run(s) without a recorded environment (trained before runs recorded it)")
            continue
        commit, changed, cpu, cores, threads, torch_version, gpu = key
        lines.append(f"- {count} run(s): commit `{commit}`{' with uncommitted changes' if changed else ''}, "
                     f"{gpu or cpu}, {cores} cores, {threads} torch thread(s), torch {torch_version}")
    return lines


def compare_with(runs: list[dict], baseline: list[dict], key: str) -> dict:
    """Difference of means and Welch's two-sided t-test p-value (None with fewer than two runs on a side)."""
    from scipy import stats

    values, reference = [r[key] for r in runs], [r[key] for r in baseline]
    difference = statistics.fmean(values) - statistics.fmean(reference)
    p_value = None
    if len(values) > 1 and len(reference) > 1:
        p_value = float(stats.ttest_ind(values, reference, equal_var=False).pvalue)
    return {"difference": difference, "p_value": p_value}


def describe(root: Path) -> str:
    """What was trained, read back from the resolved config of the first finished run."""
    for run in finished_runs(root).values():
        values = run.config_values()
        return (f"{values['model']} on {values['dataset']}, {values['epochs']} epochs, batch {values['batch_size']}, "
                f"lr {values['lr']}, Tmin {values['t_min']}")
    return "no finished runs"


def versus(row: dict, which: str) -> str:
    """A variant's ``which`` ("final" or "best") top-1 against the baseline: "+1.2 (p 0.03)", "—" for the baseline."""
    if "vs_baseline" not in row:
        return "—"
    result = row["vs_baseline"][which]
    p_value = "" if result["p_value"] is None else f" (p {result['p_value']:.2f})"
    return f"{100 * result['difference']:+.1f}{p_value}"


def markdown(table: dict, setup: str, baseline: str = "baseline", definitions: dict | None = None) -> str:
    flags = "; ".join(f"`{name}`: {' '.join(definitions[name]) or 'the recipe as it is'}"
                      for name in table) if definitions else ""
    lines = [
        f"# Variants compared — {setup}",
        "",
        "Top-1 on the whole held-out set, mean ± sample std over seeds; *final* is the last epoch, *best* the best epoch,",
        "*best − final* what the last epoch lost. Against the baseline "
        f"(`{baseline}`): difference of means in points, Welch's two-sided t-test p-value.",
        *([f"Flags: {flags}."] if flags else []),
        "",
        "Training speed: the training loop's images per second, mean over epochs after the first and over seeds.",
        "",
        "| variant | seeds | final top-1 (%) | vs baseline | best top-1 (%) | vs baseline | best − final | train img/s | "
        "per seed final / best (%) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    for variant, row in table.items():
        per_seed = ", ".join(f"s{r['seed']}: {100 * r['final_top1']:.1f} / {100 * r['best_top1']:.1f}"
                             for r in row["runs"])
        lines.append(f"| {variant} | {len(row['runs'])} | {100 * row['final_mean']:.1f} ± {100 * row['final_std']:.1f} "
                     f"| {versus(row, 'final')} | {100 * row['best_mean']:.1f} ± {100 * row['best_std']:.1f} "
                     f"| {versus(row, 'best')} | {100 * row['drop_mean']:.1f} ± {100 * row['drop_std']:.1f} "
                     f"| {row['train_images_per_s']:.0f} | {per_seed} |")
    lines += ["", "Produced by:", *provenance_lines(table)]
    return "\n".join(lines) + "\n"


def plot(table: dict, setup: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(table)
    positions = np.arange(len(names))
    figure, axes = plt.subplots(figsize=(1.6 * len(names) + 2, 4))
    for offset, key, label in ((-0.2, "final", "final epoch"), (0.2, "best", "best epoch")):
        means = [100 * table[n][f"{key}_mean"] for n in names]
        stds = [100 * table[n][f"{key}_std"] for n in names]
        axes.bar(positions + offset, means, 0.4, yerr=stds, capsize=4, label=label)
        for position, variant in zip(positions, names):  # every seed as a dot
            values = [100 * r[f"{key}_top1"] for r in table[variant]["runs"]]
            axes.scatter([position + offset] * len(values), values, color="black", s=8, zorder=3)
    axes.set_xticks(positions, names)
    axes.set_ylabel("top-1 (%)")
    axes.set_title(setup, fontsize=9)
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def curves(root: Path, variants: list[str], seeds: list[int]) -> dict[str, list[list[float]]]:
    """variant -> held-out top-1 per epoch of each finished run (from its metrics.jsonl)."""
    found = {}
    for variant in variants:
        runs = []
        for seed in seeds:
            run = Run(run_directory(root, variant, seed))
            if run.finished:
                runs.append([record["val_top1"] for record in run.records()])
        if runs:
            found[variant] = runs
    return found


def plot_curves(per_variant: dict[str, list[list[float]]], setup: str, path: Path) -> None:
    """Held-out top-1 per epoch: every seed as a thin line, the mean over seeds as a thick one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axes = plt.subplots(figsize=(7, 4))
    for index, (variant, runs) in enumerate(per_variant.items()):
        color = f"C{index}"
        length = min(len(run) for run in runs)
        epochs = np.arange(1, length + 1)
        for run in runs:
            axes.plot(epochs, 100 * np.asarray(run[:length]), color=color, alpha=0.25, linewidth=0.8)
        mean = 100 * np.mean([run[:length] for run in runs], axis=0)
        axes.plot(epochs, mean, color=color, linewidth=2.2, label=f"{variant} (mean of {len(runs)})")
    axes.set(xlabel="epoch", ylabel="held-out top-1 (%)", ylim=(0, 100))
    axes.set_title(setup, fontsize=9)
    axes.legend(loc="lower right", fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    plt.close(figure)


def report(root: Path, definitions: dict[str, list[str]], seeds: list[int], baseline: str = "baseline") -> dict:
    table = collect(root, list(definitions), seeds, baseline)
    setup = describe(root)
    text = markdown(table, setup, baseline, definitions)
    atomic_write(root / "ablations.json", lambda tmp: tmp.write_text(json.dumps(
        {"setup": setup, "baseline": baseline, "flags": definitions, "variants": table}, indent=2) + "\n"))
    atomic_write(root / "ablations.md", lambda tmp: tmp.write_text(text))
    if table:
        plot(table, setup, root / "ablations.png")
        plot_curves(curves(root, list(definitions), seeds), setup, root / "ablations_curves.png")
    print(text)
    return table


def main(argv=None) -> int:
    try:
        args, launcher_args = parse_args(argv)
        probe, _ = cli.cifar_config(launcher_args)
        root = args.output_dir or Path(f"runs/ablations_{probe.dataset}_{probe.model}")
        runs = [(variant, seed, variant_argv(launcher_args, flags, seed, run_directory(root, variant, seed)))
                for variant, flags in args.definitions.items() for seed in args.seeds]
        for _, _, argv in runs:  # every variant's flags are checked before the first run starts
            cli.cifar_config(argv)[0].check_runnable()
        if not args.report_only:
            for variant, seed, argv in runs:
                train_one(argv, variant, seed, run_directory(root, variant, seed))
    except (*cli.USER_ERRORS, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from accelerate import PartialState

    if PartialState().is_main_process:
        report(root, args.definitions, args.seeds, args.baseline)
    return 0
