"""The numbers the README and docs/ quote, rendered from the committed result files and from the code.

    python -m benchmarks.readme            # rewrite every generated block
    python -m benchmarks.readme --check    # exit 1 (and list them) when a block differs from what it renders

A generated block is the text between ``<!-- generated: NAME -->`` and ``<!-- end generated: NAME -->``; NAME picks
its renderer in `RENDERERS`; renderers read result files or run cheap code, so the check runs in the default tests.
"""

import argparse
import json
import re
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

import sdbnn
from benchmarks.common import table
from sdbnn.engine.ablations import versus
from sdbnn.engine.config import load_paper_result, load_recipe
from sdbnn.layers import SDConv2d, SEGate

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n).*?(<!-- end generated: (?P=name) -->)", re.DOTALL)


def newest(root: Path, pattern: str) -> tuple[str, dict]:
    """The newest committed result file matching ``pattern`` (dates in file names sort), and its contents."""
    path = max(root.glob(pattern), default=root / pattern)  # no match: reading it raises FileNotFoundError
    return str(path.relative_to(root)), json.loads(path.read_text())


def summary_header(baseline: str) -> list[str]:
    return ["seeds", "final top-1 (%)", f"vs {baseline}", "best top-1 (%)", f"vs {baseline}", "best − final"]


def summary_cells(row: dict) -> list:
    percent = lambda key: f"{100 * row[f'{key}_mean']:.1f} ± {100 * row[f'{key}_std']:.1f}"
    return [len(row["runs"]), percent("final"), versus(row, "final"), percent("best"), versus(row, "best"),
            percent("drop")]


def variant_table(root: Path, pattern: str, per_seed: bool = False) -> str:
    """Variants × seeds from the ablation runner's newest JSON matching ``pattern``, against its baseline."""
    path, result = newest(root, pattern)
    seeds = lambda row: ", ".join(f"{100 * r['final_top1']:.1f} / {100 * r['best_top1']:.1f}" for r in row["runs"])
    rows = [[variant, *summary_cells(row), *([seeds(row)] if per_seed else [])]
            for variant, row in result["variants"].items()]
    header = ["variant", *summary_header(result["baseline"]), *(["per seed final / best"] if per_seed else [])]
    commits = sorted({run["environment"]["commit"][:7] if run.get("environment") else "unrecorded"
                      for row in result["variants"].values() for run in row["runs"]})
    return f"{table(header, rows)}\n{result['setup']}; commit {', '.join(commits)}; `{path.rsplit('.', 1)[0]}.*`\n"


def late_epoch(root: Path, settings: list[str] | None = None) -> str:
    path, result = newest(root, "studies/results/late-epoch/late-epoch.json")
    rows = []
    for name, setting in result["settings"].items():
        label = re.search(r"on (.+?), (\d+) epochs", setting["setup"])
        rows += [[f"{label[1]}, {label[2]} epochs", f"`{variant}`", *summary_cells(row)]
                 for variant, row in setting["variants"].items() if settings is None or name in settings]
    return f"{table(['setting', 'variant', *summary_header(result['baseline'])], rows)}\n`{path}`\n"


def machine(result: dict) -> str:
    environment = result["environment"]
    threads = environment.get("torch_threads")
    return (f"{environment.get('gpu') or environment['cpu_model']}, {environment['cpu_cores']} cores"
            f"{f', {threads} threads' if threads else ''}, {result['date']}, commit {environment['commit'][:7]}")


def loaders(root: Path) -> str:
    from benchmarks.loaders import markdown_table
    path, result = newest(root, "benchmarks/results/loaders-*.json")
    return f"{markdown_table(result)}\n{machine(result)}; `{path.removesuffix('.json')}.md`\n"


def performance(root: Path) -> str:
    from benchmarks.gpu_session.targets import GOALS
    loader_path, loader = newest(root, "benchmarks/results/loaders-*.json")
    step_path, step = newest(root, "studies/results/cpu-step/cpu-step-*.json")
    ratio_cell = lambda result, key: (f"{result[key]:.2f}× (rounds {min(result[f'{key}_per_round']):.2f}–"
                                      f"{max(result[f'{key}_per_round']):.2f})")
    rows = [
        ["ImageNet train loader: FFCV vs torchvision ImageFolder", machine(loader),
         ratio_cell(loader, "imagenet_ffcv_over_torchvision"), f"`{loader_path}`"],
        ["CIFAR train loader: device-resident vs torchvision-style", machine(loader),
         ratio_cell(loader, "cifar_device_over_torchvision"), "same"],
        [f"CPU training step, {step['model']} batch {step['batch_size']} {step['precision']}: fused ops vs the "
         "`reference` backend", machine(step), ratio_cell(step, "fused_over_reference"), f"`{step_path}`"],
    ]
    rows += [[what, "not measured: no GPU lent yet", f"target {direction} {goal:g}", "`bash benchmarks/gpu_session.sh`"]
             for what, goal, direction in GOALS]
    return table(["measurement", "machine, date, commit", "ratio", "source"], rows)


def kernel_resources(root: Path) -> str:
    rows = []
    for path in sorted(root.glob("benchmarks/results/kernel-resources-triton*.json")):
        result = json.loads(path.read_text())
        kernels = result["rows"]
        act_sm90 = min(k["occupancy"] for k in kernels if k["kernel"].startswith("act_sign") and k["arch"] == "sm_90")
        rows.append([result["triton"], result["specializations"], ", ".join(result["archs"]),
                     sum(k["spill_bytes"] for k in kernels), max(k["registers"] for k in kernels),
                     f"{100 * act_sm90:.0f}%", result["commit"][:7], f"`{path.relative_to(root).with_suffix('.md')}`"])
    return table(["triton", "specializations", "archs", "spill bytes", "most registers",
                  "act_sign occupancy, sm_90 (min)", "commit", "file"], rows)


CUDA_GRAPH = "studies/results/cuda-graph/cuda-graph-2026-12-06.json"  # all four models, before the traced backward
TRACED_BACKWARD = "studies/results/cuda-graph/cuda-graph-2026-12-06-traced-backward.json"  # after it, two models
PREDICTED = {"Inductor kernels": lambda row: str(row["inductor_kernels"]),  # columns both prediction tables show
             "GB / step": lambda row: f"{row['bytes_per_step'] / 1e9:.2f}",
             "predicted ms": lambda row: f"{row['predicted_step_ms']:.2f}",
             "÷ fp twin": lambda row: f"{row['predicted_vs_fp_twin']:.2f}",
             "÷ eager fp32 ref": lambda row: f"{row['predicted_vs_eager_reference']:.2f}"}


def cuda_graph_rows(root: Path, path: str) -> list[dict]:
    return [row for row in newest(root, path)[1]["rows"] if row["precision"] == "bf16" and row["arch"] == "sm_90"]


def cuda_graph(root: Path) -> str:
    rows = [[row["model"], row["batch"], f"{row['launches_per_step']:,}", row["max_registers"],
             len(row["spilling_kernels"]) or "none", *(cell(row) for cell in PREDICTED.values())]
            for row in cuda_graph_rows(root, CUDA_GRAPH)]
    header = ["model", "batch", "launches / step", "max registers", "spilling", *PREDICTED]
    return f"{table(header, rows)}\nbf16, sm_90, predictions; `{CUDA_GRAPH}`\n"


def cuda_graph_fusion(root: Path) -> str:
    graphs = [(graph, provider) for graph in ("forward", "backward") for provider in ("ops", "reference")]
    rows = [[row["model"], *(f"{cost['bytes'] / 1e6:,.0f} / {cost['launches']}" for graph, provider in graphs
                             for cost in [row["ops_vs_inductor_reference"][graph][provider]])]
            for row in cuda_graph_rows(root, CUDA_GRAPH)]
    providers = {"ops": "custom ops", "reference": "Inductor on reference"}
    header = ["model", *(f"{graph}: {providers[provider]}" for graph, provider in graphs)]
    return f"{table(header, rows)}\nMB moved / launches per graph, bf16, sm_90; `{CUDA_GRAPH}`\n"


def traced_backward(root: Path) -> str:
    before = {row["model"]: row for row in cuda_graph_rows(root, CUDA_GRAPH)}
    rows = [[after["model"], *(f"{cell(before[after['model']])} → {cell(after)}" for cell in PREDICTED.values())]
            for after in cuda_graph_rows(root, TRACED_BACKWARD)]
    return (f"{table(['model', *PREDICTED], rows)}\nbf16, sm_90, predictions, Triton backward → traced backward; "
            f"`{TRACED_BACKWARD}`\n")


PAPER_MODELS = ["resnet20", "vgg_small", "resnet18_cifar", "resnet18_imagenet"]


def cost(root: Path) -> str:
    from sdbnn.deploy import cost as cost_counting
    from sdbnn.deploy.cost_table import markdown_table
    return markdown_table([cost_counting.summary(name) for name in PAPER_MODELS]) + "\n"


def packed(root: Path) -> str:
    from safetensors.torch import save
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in PAPER_MODELS:
            torch.manual_seed(0)
            model, path = sdbnn.create_model(name), Path(folder) / f"{name}.sdbnn.safetensors"
            plain = len(save({key: value.contiguous() for key, value in model.state_dict().items()}))
            sdbnn.export_packed(model, path, config=name)
            bits = path.stat().st_size
            rows.append([f"`{name}`", f"{plain:,} B", f"{bits:,} B", f"1/{plain / bits:.1f}"])
    return table(["model", "`model.safetensors` (fp32)", "packed", "ratio"], rows)


def architectures(root: Path) -> str:
    names = {"ede": "EDE", "approx": "ApproxSign", "clip": "clip-STE", "ste": "STE"}
    rows = []
    for name in [*PAPER_MODELS, "resnet34"]:
        with torch.device("meta"):
            model = sdbnn.create_model(name)
        convs = [m for m in model.modules() if isinstance(m, SDConv2d)]
        gates = sorted({(m.gate.reduce.in_features, m.gate.reduce.out_features)
                        for m in convs if isinstance(m.gate, SEGate)})
        reduction = f"{convs[0].se_reduction}: {', '.join(f'{c}→{h}' for c, h in gates)}" if gates else "—"
        surrogates = next((f"{names[c.act_surrogate]} / {names[c.weight_surrogate]}" for c in convs), "—")
        rows.append([sdbnn.models.model_spec(name).summary.split(" (")[0], f"`{name}`",
                     f"{sum(p.numel() for p in model.parameters()):,}", len(convs), reduction, surrogates])
    return table(["model", "`create_model` name", "parameters", "SD convs", "ASD r: hidden widths (Cin → Cin//r)",
                  "surrogates (act / weight)"], rows)


CIFAR_RECIPES = {"ResNet-20": "resnet20", "ResNet-18": "resnet18_cifar", "VGG-Small": "vgg_small"}


def cifar_recipes(root: Path) -> str:
    rows = [[label, f"{values['lr']:g}", values["epochs"], f"{values['t_min']:g}", f"`{path}`"]
            for label, name in CIFAR_RECIPES.items() for path in [f"launch/configs/cifar10_{name}.yaml"]
            for values in [load_recipe(root / path)]]
    return table(["model", "lr", "epochs", "Tmin", "recipe file"], rows)


def ede_schedule_table(root: Path) -> str:
    rows = []
    for label, name in CIFAR_RECIPES.items():
        epochs, t_min = (load_recipe(root / f"launch/configs/cifar10_{name}.yaml")[key] for key in ("epochs", "t_min"))
        schedule = [sdbnn.ede_schedule(epoch, epochs, t_min) for epoch in range(epochs)]
        first = lambda t_value: next(f"e = {e}, k = {k:g}" for e, (k, t) in enumerate(schedule)
                                     if t >= t_value * (1 - 1e-9))
        (k0, t0), (k_last, t_last) = schedule[0], schedule[-1]
        rows.append([f"{label} ({epochs}), Tmin {t_min:g}", f"t = {t0:g}, k = {k0:g}", first(0.1), first(1.0),
                     f"e = {epochs - 1}: t ≈ {t_last:.2f}, k = {k_last:g}"])
    return table(["model (E)", "e = 0", "first t ≥ 0.1", "first t ≥ 1", "last epoch"], rows)


def published_results(root: Path) -> str:
    number = lambda value: "" if value is None else f"{value:g}"
    names = ["cifar10_resnet20", "cifar10_vgg_small", "cifar10_resnet18_cifar", "imagenet_stage2", "imagenet_stage1"]
    rows = [[paper["row"], *(number(paper.get(key)) for key in ("top1", "top5", "irnet_top1")), paper["epoch"],
             f"`{name}`"] for name in names for paper in [load_paper_result(root / f"launch/configs/{name}.yaml")]]
    return table(["row", "top-1", "top-5", "IR-Net top-1", "reported", "recipe"], rows)


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


# every generated block's name -> function(repository root) -> the block's text
RENDERERS: dict[str, Callable[[Path], str]] = {
    "precision": partial(variant_table, pattern="studies/results/precision/bf16-digits30-*.json", per_seed=True),
    "ablations-paper": partial(variant_table, pattern="studies/results/ablations/digits15-paper-*.json"),
    "ablations-stable": partial(variant_table, pattern="studies/results/ablations/digits15-stable-*.json"),
    "late-epoch": late_epoch, "demo": partial(late_epoch, settings=["digits15"]), "loaders": loaders,
    "performance": performance, "kernel-resources": kernel_resources, "cuda-graph": cuda_graph,
    "cuda-graph-fusion": cuda_graph_fusion, "traced-backward": traced_backward, "cost": cost, "packed": packed,
    "architectures": architectures, "cifar-recipes": cifar_recipes, "ede-schedule": ede_schedule_table,
    "published-results": published_results, "gpu-session": gpu_session,
}


def stale_documents(root: Path, write: bool, only: set[str] | None = None) -> list[Path]:
    """The documents whose generated blocks differ from what they render (rewritten when ``write``); ``only``: render
    just these blocks. Raises ValueError when a renderer has no block anywhere (a table that left the docs)."""
    cache: dict[str, str] = {}

    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in RENDERERS:
            raise KeyError(f"unknown generated block {name!r}; known: {', '.join(sorted(RENDERERS))}")
        if only is not None and name not in only:
            return match[0]
        if name not in cache:
            cache[name] = RENDERERS[name](root)
        return match[1] + cache[name] + match[3]

    stale = []
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = path.read_text()
        if (rendered := BLOCK.sub(replace, text)) != text:
            stale.append(path)
            if write:
                path.write_text(rendered)
    if only is None and (unused := set(RENDERERS) - set(cache)):
        raise ValueError(f"renderers with no block in any document: {', '.join(sorted(unused))}")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.readme", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a block is out of date")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this one)")
    args = parser.parse_args(argv)
    try:
        stale = ", ".join(str(path.relative_to(args.root)) for path in stale_documents(args.root, not args.check))
    except (ValueError, KeyError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.check and stale:
        print(f"out of date (run python -m benchmarks.readme): {stale}", file=sys.stderr)
        return 1
    print(f"rewrote {stale}" if stale else "every generated block is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
