"""The numbers the README and docs/ quote, rendered from the committed result files and from the code.

    python -m benchmarks.readme            # rewrite every generated block
    python -m benchmarks.readme --check    # exit 1 (and list them) when a block differs from what it renders

A generated block is the text between ``<!-- generated: NAME -->`` and ``<!-- end generated: NAME -->``; NAME picks
its renderer in `RENDERERS`. Prose around a block says what the numbers mean and is never generated; a number that
prose needs is in a block. Renderers read result files (never re-measure) or run cheap code (meta-device models,
recipe files), so the check runs in the default test set.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import table

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end generated: (?P=name) -->)",
                   re.DOTALL)

RENDERERS: dict[str, Callable[[Path], str]] = {}  # name -> function(repository root) -> the block's text


def documents(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def renderer(name: str):
    def register(function: Callable[[Path], str]) -> Callable[[Path], str]:
        RENDERERS[name] = function
        return function
    return register


def load(root: Path, path: str) -> dict:
    return json.loads((root / path).read_text())


def newest(root: Path, pattern: str) -> str:
    """The newest committed result file matching ``pattern`` (dates in file names sort)."""
    matches = sorted(root.glob(pattern))
    if not matches:
        raise FileNotFoundError(f"no result file matches {pattern} under {root}")
    return str(matches[-1].relative_to(root))


def percent(mean: float, std: float) -> str:
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def versus(row: dict, which: str) -> str:
    from sdbnn.engine.ablations import versus as ablation_versus

    return ablation_versus(row, which)


def commit_of(environment: dict | None) -> str:
    return environment["commit"][:7] if environment else "unrecorded"


# --- result files -----------------------------------------------------------------------------------------------

def variant_table(root: Path, path: str, with_per_seed: bool = False) -> str:
    """Variants × seeds from the ablation runner's JSON: final and best top-1 against the baseline."""
    result = load(root, path)
    rows = []
    for variant, row in result["variants"].items():
        cells = [variant, str(len(row["runs"])), percent(row["final_mean"], row["final_std"]), versus(row, "final"),
                 percent(row["best_mean"], row["best_std"]), versus(row, "best")]
        if with_per_seed:
            cells.insert(6, percent(row["drop_mean"], row["drop_std"]))
            cells.append(", ".join(f"{100 * r['final_top1']:.1f} / {100 * r['best_top1']:.1f}" for r in row["runs"]))
        rows.append(cells)
    header = ["variant", "seeds", "final top-1 (%)", f"vs {result['baseline']}", "best top-1 (%)",
              f"vs {result['baseline']}"]
    if with_per_seed:
        header += ["best − final", "per seed final / best"]
    commits = sorted({commit_of(run.get("environment")) for row in result["variants"].values() for run in row["runs"]})
    return (f"{table(header, rows)}\n{result['setup']}; commit {', '.join(commits)}; "
            f"`{path.rsplit('.', 1)[0]}.*`\n")


@renderer("precision")
def precision(root: Path) -> str:
    return variant_table(root, newest(root, "studies/results/precision/bf16-digits30-*.json"), with_per_seed=True)


@renderer("ablations-paper")
def ablations_paper(root: Path) -> str:
    return variant_table(root, newest(root, "studies/results/ablations/digits15-paper-*.json"))


@renderer("ablations-stable")
def ablations_stable(root: Path) -> str:
    return variant_table(root, newest(root, "studies/results/ablations/digits15-stable-*.json"))


def late_epoch_rows(root: Path, settings: list[str] | None = None) -> str:
    path = "studies/results/late-epoch/late-epoch.json"
    result = load(root, path)
    rows = []
    for name, setting in result["settings"].items():
        if settings is not None and name not in settings:
            continue
        label = re.search(r"on (.+?), (\d+) epochs", setting["setup"])
        for variant, row in setting["variants"].items():
            rows.append([f"{label[1]}, {label[2]} epochs", f"`{variant}`", str(len(row["runs"])),
                         percent(row["final_mean"], row["final_std"]), versus(row, "final"),
                         percent(row["best_mean"], row["best_std"]), versus(row, "best"),
                         percent(row["drop_mean"], row["drop_std"])])
    baseline = result["baseline"]
    header = ["setting", "variant", "seeds", "final top-1 (%)", f"vs {baseline}", "best top-1 (%)", f"vs {baseline}",
              "best − final"]
    return f"{table(header, rows)}\n`{path}`\n"


@renderer("late-epoch")
def late_epoch(root: Path) -> str:
    return late_epoch_rows(root)


@renderer("demo")
def demo(root: Path) -> str:
    return late_epoch_rows(root, ["digits15"])


def ratio_cell(result: dict, key: str) -> str:
    rounds = result[f"{key}_per_round"]
    return f"{result[key]:.2f}× (rounds {min(rounds):.2f}–{max(rounds):.2f})"


def machine(result: dict) -> str:
    environment = result["environment"]
    threads = environment.get("torch_threads")
    return (f"{environment.get('gpu') or environment['cpu_model']}, {environment['cpu_cores']} cores"
            f"{f', {threads} threads' if threads else ''}, {result['date']}, commit {commit_of(environment)}")


@renderer("loaders")
def loaders(root: Path) -> str:
    path = newest(root, "benchmarks/results/loaders-*.json")
    result = load(root, path)
    rows = [
        ["ImageNet train, torchvision ImageFolder + DataLoader", f"{result['imagenet_torchvision_images_per_s']:,.0f}",
         f"{result['imagenet_torchvision_cpu_ms_per_image']:.2f}", "1.00"],
        [f"ImageNet train, FFCV ({result['ffcv_storage']})", f"{result['imagenet_ffcv_images_per_s']:,.0f}",
         f"{result['imagenet_ffcv_cpu_ms_per_image']:.2f}", ratio_cell(result, "imagenet_ffcv_over_torchvision")],
        ["CIFAR train, torchvision-style dataset + DataLoader", f"{result['cifar_torchvision_images_per_s']:,.0f}",
         f"{result['cifar_torchvision_cpu_ms_per_image']:.2f}", "1.00"],
        ["CIFAR train, device-resident loader, on the CPU", f"{result['cifar_device_resident_images_per_s']:,.0f}",
         f"{result['cifar_device_resident_cpu_ms_per_image']:.2f}", ratio_cell(result, "cifar_device_over_torchvision")],
    ]
    return (f"{table(['pipeline', 'images/s', 'CPU ms per image', 'ratio (median of rounds)'], rows)}\n"
            f"{machine(result)}; `{path.removesuffix('.json')}.md`\n")


@renderer("performance")
def performance(root: Path) -> str:
    from benchmarks.gpu_session.targets import GOALS

    loader_path = newest(root, "benchmarks/results/loaders-*.json")
    loader = load(root, loader_path)
    step_path = newest(root, "studies/results/cpu-step/cpu-step-*.json")
    step = load(root, step_path)
    rows = [
        ["ImageNet train loader: FFCV vs torchvision ImageFolder", machine(loader),
         ratio_cell(loader, "imagenet_ffcv_over_torchvision"), f"`{loader_path}`"],
        ["CIFAR train loader: device-resident vs torchvision-style", machine(loader),
         ratio_cell(loader, "cifar_device_over_torchvision"), "same"],
        [f"CPU training step, {step['model']} batch {step['batch_size']} {step['precision']}: fused ops vs the "
         "`reference` backend", machine(step), ratio_cell(step, "fused_over_reference"), f"`{step_path}`"],
    ]
    for what, goal, direction in GOALS:
        rows.append([what, "not measured: no GPU lent yet", f"target {direction} {goal:g}", "`bash benchmarks/gpu_session.sh`"])
    return table(["measurement", "machine, date, commit", "ratio", "source"], rows)


@renderer("kernel-resources")
def kernel_resources(root: Path) -> str:
    rows = []
    for path in sorted(root.glob("benchmarks/results/kernel-resources-triton*.json")):
        result = load(root, str(path.relative_to(root)))
        compiled = result["rows"]
        act_sm90 = [row["occupancy"] for row in compiled if row["kernel"].startswith("act_sign") and row["arch"] == "sm_90"]
        rows.append([result["triton"], str(result["specializations"]), ", ".join(result["archs"]),
                     str(sum(row["spill_bytes"] for row in compiled)), str(max(row["registers"] for row in compiled)),
                     f"{100 * min(act_sm90):.0f}%", result["commit"][:7],
                     f"`{path.relative_to(root).with_suffix('.md')}`"])
    header = ["triton", "specializations", "archs", "spill bytes", "most registers", "act_sign occupancy, sm_90 (min)",
              "commit", "file"]
    return table(header, rows)


CUDA_GRAPH = "benchmarks/results/cuda-graph-2026-12-06.json"  # all four models, before the traced act_sign backward
TRACED_BACKWARD = "benchmarks/results/cuda-graph-2026-12-06-traced-backward.json"  # the same, after it (two models)


def cuda_graph_rows(root: Path, path: str) -> list[dict]:
    return [row for row in load(root, path)["rows"] if row["precision"] == "bf16" and row["arch"] == "sm_90"]


@renderer("cuda-graph")
def cuda_graph(root: Path) -> str:
    rows = [[row["model"], str(row["batch"]), str(row["inductor_kernels"]), f"{row['launches_per_step']:,}",
             f"{row['bytes_per_step'] / 1e9:.2f}", str(row["max_registers"]), str(len(row["spilling_kernels"]) or "none"),
             f"{row['predicted_step_ms']:.2f}", f"{row['predicted_vs_fp_twin']:.2f}",
             f"{row['predicted_vs_eager_reference']:.2f}"] for row in cuda_graph_rows(root, CUDA_GRAPH)]
    header = ["model", "batch", "Inductor kernels", "launches / step", "GB / step", "max registers", "spilling",
              "predicted ms", "÷ fp twin", "÷ eager fp32 ref"]
    return f"{table(header, rows)}\nbf16, sm_90, predictions; `{CUDA_GRAPH}`\n"


@renderer("cuda-graph-fusion")
def cuda_graph_fusion(root: Path) -> str:
    rows = []
    for row in cuda_graph_rows(root, CUDA_GRAPH):
        cells = [row["model"]]
        for graph in ("forward", "backward"):
            for provider in ("ops", "reference"):
                cost = row["ops_vs_inductor_reference"][graph][provider]
                cells.append(f"{cost['bytes'] / 1e6:,.0f} / {cost['launches']}")
        rows.append(cells)
    header = ["model", "forward: custom ops", "forward: Inductor on reference", "backward: custom ops",
              "backward: Inductor on reference"]
    return f"{table(header, rows)}\nMB moved / launches per graph, bf16, sm_90; `{CUDA_GRAPH}`\n"


@renderer("traced-backward")
def traced_backward(root: Path) -> str:
    before = {row["model"]: row for row in cuda_graph_rows(root, CUDA_GRAPH)}
    rows = []
    for after in cuda_graph_rows(root, TRACED_BACKWARD):
        old = before[after["model"]]
        rows.append([after["model"], f"{old['inductor_kernels']} → {after['inductor_kernels']}",
                     f"{old['bytes_per_step'] / 1e9:.2f} → {after['bytes_per_step'] / 1e9:.2f}",
                     f"{old['predicted_step_ms']:.2f} → {after['predicted_step_ms']:.2f}",
                     f"{old['predicted_vs_fp_twin']:.2f} → {after['predicted_vs_fp_twin']:.2f}",
                     f"{old['predicted_vs_eager_reference']:.2f} → {after['predicted_vs_eager_reference']:.2f}"])
    header = ["model", "Inductor kernels", "GB / step", "predicted ms", "÷ fp twin", "÷ eager fp32 ref"]
    return f"{table(header, rows)}\nbf16, sm_90, predictions, Triton backward → traced backward; `{TRACED_BACKWARD}`\n"


# --- the code -----------------------------------------------------------------------------------------------------

@renderer("cost")
def cost(root: Path) -> str:
    from sdbnn.deploy import cost as cost_counting
    from sdbnn.deploy.cost_table import markdown_table

    return markdown_table([cost_counting.summary(name) for name in PAPER_MODELS]) + "\n"


PAPER_MODELS = ["resnet20", "vgg_small", "resnet18_cifar", "resnet18_imagenet"]


@renderer("packed")
def packed(root: Path) -> str:
    import torch
    from safetensors.torch import save_file

    import sdbnn

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in PAPER_MODELS:
            torch.manual_seed(0)
            model = sdbnn.create_model(name)
            plain, bits = Path(folder) / f"{name}.safetensors", Path(folder) / f"{name}.sdbnn.safetensors"
            save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(plain))
            sdbnn.export_packed(model, bits, config=name)
            ratio = plain.stat().st_size / bits.stat().st_size
            rows.append([f"`{name}`", f"{plain.stat().st_size:,} B", f"{bits.stat().st_size:,} B", f"1/{ratio:.1f}"])
    return table(["model", "`model.safetensors` (fp32)", "packed", "ratio"], rows)


@renderer("models")
def models(root: Path) -> str:
    from sdbnn.models import list_models, model_spec

    rows = [[f"`{name}`", model_spec(name).summary.split(" (")[0], f"{parameter_count(name):,}"]
            for name in [*PAPER_MODELS, "resnet34"]]
    twins = [name for name in list_models() if name.endswith("_fp")]
    rows.append([f"`<name>_fp` ({len(twins)})", "full-precision twin of each SD-BNN model", ""])
    return table(["name", "what", "parameters"], rows)


def parameter_count(name: str) -> int:
    import torch

    import sdbnn

    with torch.device("meta"):
        return sum(p.numel() for p in sdbnn.create_model(name).parameters())


@renderer("architectures")
def architectures(root: Path) -> str:
    import torch

    import sdbnn
    from sdbnn.layers import SDConv2d, SEGate

    names = {"SD-BNN ": "", " for CIFAR": " (CIFAR)"}
    rows = []
    for name in [*PAPER_MODELS, "resnet34"]:
        with torch.device("meta"):
            model = sdbnn.create_model(name)
        convs = [m for m in model.modules() if isinstance(m, SDConv2d)]
        gates = [(m.gate.reduce.in_features, m.gate.reduce.out_features) for m in convs if isinstance(m.gate, SEGate)]
        widths = ", ".join(f"{c}→{h}" for c, h in sorted(set(gates)))
        reduction = f"{convs[0].se_reduction}: {widths}" if gates else "—"
        surrogates = f"{SURROGATE_NAMES[convs[0].act_surrogate]} / {SURROGATE_NAMES[convs[0].weight_surrogate]}" \
            if convs else "—"
        label = sdbnn.models.model_spec(name).summary.split(" (")[0]
        for old, new in names.items():
            label = label.replace(old, new)
        rows.append([label, f"`{name}`", f"{parameter_count(name):,}", str(len(convs)), reduction, surrogates])
    header = ["model", "`create_model` name", "parameters", "SD convs", "ASD r: hidden widths (Cin → Cin//r)",
              "surrogates (act / weight)"]
    return table(header, rows)


SURROGATE_NAMES = {"ede": "EDE", "approx": "ApproxSign", "clip": "clip-STE", "ste": "STE"}
CIFAR_RECIPES = {"ResNet-20": "cifar10_resnet20", "ResNet-18 CIFAR": "cifar10_resnet18_cifar",
                 "VGG-Small": "cifar10_vgg_small"}


def recipe(root: Path, name: str) -> dict:
    from sdbnn.engine.config import load_recipe

    return load_recipe(root / "launch" / "configs" / f"{name}.yaml")


def paper(root: Path, name: str) -> dict:
    from sdbnn.engine.config import load_paper_result

    return load_paper_result(root / "launch" / "configs" / f"{name}.yaml")


def number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


@renderer("cifar-recipes")
def cifar_recipes(root: Path) -> str:
    rows = [[label.split(" CIFAR")[0], f"{recipe(root, name)['lr']:g}", str(recipe(root, name)["epochs"]),
             f"{recipe(root, name)['t_min']:.0e}".replace("e-0", "e-"), f"`launch/configs/{name}.yaml`"]
            for label, name in CIFAR_RECIPES.items()]
    return table(["model", "lr", "epochs", "Tmin", "recipe file"], rows)


@renderer("ede-schedule")
def ede_schedule_table(root: Path) -> str:
    from sdbnn import ede_schedule

    rows = []
    for label, name in CIFAR_RECIPES.items():
        epochs, t_min = recipe(root, name)["epochs"], recipe(root, name)["t_min"]
        schedule = [ede_schedule(epoch, epochs, t_min) for epoch in range(epochs)]

        def first_reaching(t_value: float) -> str:
            epoch = next(e for e, (_, t) in enumerate(schedule) if t >= t_value * (1 - 1e-9))
            return f"e = {epoch}, k = {schedule[epoch][0]:g}"

        k0, t0 = schedule[0]
        k_last, t_last = schedule[-1]
        rows.append([f"{label} ({epochs}), Tmin {t_min:.0e}".replace("e-0", "e-"), f"t = {t0:g}, k = {k0:g}",
                     first_reaching(0.1), first_reaching(1.0), f"e = {epochs - 1}: t ≈ {t_last:.2f}, k = {k_last:g}"])
    return table(["model (E)", "e = 0", "first t ≥ 0.1", "first t ≥ 1", "last epoch"], rows)


PUBLISHED = ["cifar10_resnet20", "cifar10_vgg_small", "cifar10_resnet18_cifar", "imagenet_stage2", "imagenet_stage1"]


@renderer("published-results")
def published_results(root: Path) -> str:
    rows = []
    for name in PUBLISHED:
        result = paper(root, name)
        rows.append([result["row"], number(result["top1"]), number(result.get("top5")),
                     number(result.get("irnet_top1")), result["epoch"], f"`{name}`"])
    return table(["row", "top-1", "top-5", "IR-Net top-1", "reported", "recipe"], rows)


@renderer("gpu-session")
def gpu_session(root: Path) -> str:
    from benchmarks.gpu_session.__main__ import STAGES
    from benchmarks.gpu_session.plan import COMPILE_S, GPU_PLAN
    from sdbnn import testing

    budgets = {name: stage.budget(GPU_PLAN) for name, stage in STAGES.items() if stage.budget(GPU_PLAN)}
    hard_limit = re.search(r"GPU_SESSION_HARD_LIMIT_S:-(\d+)", (root / "benchmarks/gpu_session.sh").read_text())[1]
    return "\n".join([
        "- stage budgets: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in budgets.items())
        + f"; total {sum(budgets.values()):.0f} s; hard stop at {hard_limit} s (`GPU_SESSION_HARD_LIMIT_S`)",
        "- compile estimates: " + ", ".join(f"{name} ≈ {seconds} s" for name, seconds in COMPILE_S.items()),
        f"- model check (bf16 against bf16): loss within {100 * testing.BF16_LOSS_RTOL:g}%, all gradients together "
        f"‖ΔG‖/‖G‖ ≤ {testing.BF16_GLOBAL_GRAD_RTOL:g}, at most {100 * testing.BF16_PARAMETERS_OVER_SHARE:g}% of the "
        f"parameter tensors over {testing.BF16_PARAMETER_GRAD_RTOL:g} each",
    ]) + "\n"


# --- the command --------------------------------------------------------------------------------------------------

def render_document(text: str, root: Path, cache: dict[str, str], only: set[str] | None = None) -> str:
    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in RENDERERS:
            raise KeyError(f"unknown generated block {name!r}; known: {', '.join(sorted(RENDERERS))}")
        if only is not None and name not in only:
            return match[0]
        if name not in cache:
            cache[name] = RENDERERS[name](root)
        return match[1] + cache[name] + match[4]
    return BLOCK.sub(replace, text)


def stale_documents(root: Path, write: bool, only: set[str] | None = None) -> list[Path]:
    """The documents whose generated blocks differ from what the result files and the code give (rewritten when
    ``write``); ``only``: render just these blocks. Raises ValueError when a renderer has no block anywhere (a table
    that left the docs)."""
    cache: dict[str, str] = {}
    stale = []
    for path in documents(root):
        text = path.read_text()
        rendered = render_document(text, root, cache, only)
        if rendered != text:
            stale.append(path)
            if write:
                path.write_text(rendered)
    if only is None and set(RENDERERS) - set(cache):
        raise ValueError(f"renderers with no block in any document: {', '.join(sorted(set(RENDERERS) - set(cache)))}")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.readme", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a block is out of date")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this one)")
    args = parser.parse_args(argv)
    try:
        stale = stale_documents(args.root, write=not args.check)
    except (ValueError, KeyError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    names = ", ".join(str(path.relative_to(args.root)) for path in stale)
    if args.check:
        if stale:
            print(f"out of date (run python -m benchmarks.readme): {names}", file=sys.stderr)
            return 1
        print("every generated block is up to date")
    else:
        print(f"rewrote {names}" if stale else "every generated block was up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
