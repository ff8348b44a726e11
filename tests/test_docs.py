"""Every "docs/<page>.md §<heading>" citation in the code, scripts and docs resolves to a heading of that page; the
tables of docs/method.md and README that restate the code's schedule and the recipes' values agree with them."""

import re

import pytest
from helpers import ROOT

CITED_FILES = [path for pattern in ("sdbnn/**/*.py", "kernels/*.py", "pipelines/*.py", "launch/**/*", "benchmarks/**/*.py",
                                    "studies/*.py", "studies/README.md", "tests/*.py", ".ci/*", "docs/*.md", "README.md",
                                    "pyproject.toml")
               for path in ROOT.glob(pattern) if path.is_file()]
CITATION = re.compile(r"docs/([\w.-]+\.md) §")
# what may follow a cited heading: punctuation, the end of the line, or a joining word ("§A and §B as ...")
AFTER_HEADING = r"(?=$|\s*[,.;:)\]}'\"`]|\s+(?:(?:and|as|in|for|of|with)\b|—|\())"


def headings(page: str) -> list[str]:
    text = (ROOT / "docs" / page).read_text()
    return [line.lstrip("#").strip() for line in text.splitlines() if re.match(r"#{1,6} ", line)]


def citations() -> list[tuple[str, int, str, str]]:
    """(file, line number, page, text after §) for every § of every line that cites a docs page."""
    found = []
    for path in CITED_FILES:
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            match = CITATION.search(line)
            if match:
                for section in line[match.end() - 1:].split("§")[1:]:
                    found.append((str(path.relative_to(ROOT)), number, match.group(1), section))
    return found


def test_every_docs_citation_resolves_to_a_heading():
    found = citations()
    assert len(found) >= 20  # the code cites the method page throughout
    unresolved = []
    for file, number, page, section in found:
        assert (ROOT / "docs" / page).is_file(), f"{file}:{number} cites docs/{page}, which does not exist"
        if not any(re.match(re.escape(heading) + AFTER_HEADING, section) for heading in headings(page)):
            unresolved.append(f"{file}:{number}: docs/{page} §{section.strip()[:40]}")
    assert not unresolved, "citations without a matching heading:\n" + "\n".join(unresolved)


def test_headings_are_unique_so_citations_are_unambiguous():
    for page in ("method.md", "architecture.md"):
        names = headings(page)
        assert len(names) == len(set(names)), page


def table_rows(text: str, first_cell: str) -> list[list[str]]:
    """The cells of every markdown table row whose first cell matches the regex ``first_cell``."""
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in text.splitlines()
            if re.match(rf"\|\s*{first_cell}\s*\|", line)]


RECIPE_MODELS = {"ResNet-20": "resnet20", "ResNet-18 CIFAR": "resnet18_cifar", "VGG-Small": "vgg_small"}


def test_method_ede_schedule_table_is_what_ede_schedule_computes():
    """docs/method.md §EDE schedule: t and k at the first epoch, where t reaches 0.1 and 1, and at the last epoch, for
    each CIFAR recipe's epochs and Tmin."""
    from sdbnn import ede_schedule
    from sdbnn.engine.config import load_recipe

    rows = table_rows((ROOT / "docs" / "method.md").read_text(), r"[\w\s-]+ \((\d+)\), Tmin [\d.e-]+")
    assert len(rows) == 3
    for label, start, at_tenth, at_one, last in rows:
        epochs, t_min = int(re.search(r"\((\d+)\)", label)[1]), float(label.split("Tmin")[1])

        def at(epoch: int) -> tuple[float, float]:
            return ede_schedule(epoch, epochs, t_min)

        t0, k0 = (float(v) for v in re.fullmatch(r"t = ([\d.e-]+), k = (\d+)", start).groups())
        assert at(0) == pytest.approx((k0, t0)), label
        for cell, t in ((at_tenth, 0.1), (at_one, 1.0)):
            epoch = int(re.match(r"e = (\d+)", cell)[1])
            assert at(epoch) == pytest.approx((max(1 / t, 1), t)), (label, cell)
            if ", k = " in cell:
                assert float(cell.split("k = ")[1]) == pytest.approx(max(1 / t, 1)), (label, cell)
        epoch, t_last = re.fullmatch(r"e = (\d+): t ≈ ([\d.]+), k = 1", last).groups()
        assert int(epoch) == epochs - 1 and f"{at(epochs - 1)[1]:.2f}" == t_last and at(epochs - 1)[0] == 1, label
        recipe = load_recipe(ROOT / "launch" / "configs" / f"cifar10_{RECIPE_MODELS[label.split(' (')[0]]}.yaml")
        assert (recipe["epochs"], recipe["t_min"]) == (epochs, t_min), label


def test_method_cifar_recipe_table_is_the_recipe_files():
    """docs/method.md §CIFAR-10 recipe's table (lr, epochs, Tmin) against launch/configs/cifar10_<model>.yaml."""
    from sdbnn.engine.config import load_recipe

    rows = table_rows((ROOT / "docs" / "method.md").read_text(), r"(ResNet-20|ResNet-18|VGG-Small)")
    rows = [row for row in rows if row[-1].startswith("`launch/configs/cifar10_")]
    assert len(rows) == 3
    for _, lr, epochs, t_min, recipe_file in rows:
        recipe = load_recipe(ROOT / recipe_file.strip("`"))
        assert (recipe["lr"], recipe["epochs"], recipe["t_min"]) == (float(lr), int(epochs), float(t_min)), recipe_file


def test_published_results_in_readme_and_method_are_the_recipes_paper_blocks():
    """The paper's numbers in README's reproduction table and in docs/method.md §Published results: the ones the
    recipes record (what launch/reproduce.py compares against)."""
    from sdbnn.engine.config import load_paper_result

    def paper(recipe: str) -> dict:
        return load_paper_result(ROOT / "launch" / "configs" / f"{recipe}.yaml")

    def number(cell: str) -> float | None:
        return float(cell) if cell else None

    readme = (ROOT / "README.md").read_text()
    assert f"# {paper('cifar10_resnet20')['top1']} (best epoch) in the paper" in readme
    stage1, stage2 = paper("imagenet_stage1"), paper("imagenet_stage2")
    assert f"# stage 1 then stage 2: {stage2['top1']} / {stage2['top5']}" in readme
    readme_rows = table_rows(readme, r"`(cifar10|imagenet)_\w+`")
    assert len(readme_rows) == 5
    for recipe, _, top1, top5, reported in readme_rows:
        published = paper(recipe.strip("`"))
        assert (number(top1), number(top5)) == (published["top1"], published.get("top5")), recipe
        irnet = re.search(r"IR-Net: ([\d.]+)", reported)
        assert (float(irnet[1]) if irnet else None) == published.get("irnet_top1"), recipe
    method_rows = table_rows((ROOT / "docs" / "method.md").read_text(), r"(CIFAR-10|ImageNet)")
    method_rows = [row for row in method_rows if row[-1].startswith("`")]
    assert len(method_rows) == 5
    for _, _, _, top1, top5, irnet, recipe in method_rows:
        published = paper(recipe.strip("`"))
        assert (number(top1), number(top5), number(irnet)) == (
            published["top1"], published.get("top5"), published.get("irnet_top1")), recipe


def test_readme_gpu_session_numbers_are_the_code():
    """README §GPU: each stage's budget, their total, the hard stop, the compile estimates and the model check's
    tolerances are design values of benchmarks/gpu_session; the README restates them, so they are compared here."""
    from benchmarks.gpu_session import correctness
    from benchmarks.gpu_session.__main__ import STAGES
    from benchmarks.gpu_session.plan import COMPILE_S, GPU_PLAN

    readme = (ROOT / "README.md").read_text().replace("\n", " ")
    rows = table_rows((ROOT / "README.md").read_text(), r"([a-e]\. [\w ]+|targets)")
    quoted = {row[0].split(". ")[-1].replace(" ", "_"): int(row[2].removesuffix(" s")) for row in rows}
    budgets = {name: stage.budget(GPU_PLAN) for name, stage in STAGES.items()}
    assert {{"training_step": "training"}.get(name, name): seconds for name, seconds in quoted.items()} == {
        name: seconds for name, seconds in budgets.items() if seconds}  # gpu_tests runs only when given a budget
    assert f"the sum of the stages' budgets, {sum(budgets.values()):.0f} s" in readme
    assert f"# a {sum(budgets.values()):.0f} s budget (not yet run on a GPU)" in readme
    assert 'GPU_SESSION_HARD_LIMIT_S:-420}"' in (ROOT / "benchmarks" / "gpu_session.sh").read_text()
    assert "A hard stop at 420 s (`GPU_SESSION_HARD_LIMIT_S`)" in readme
    assert (f"(a ResNet-18 compile ≈ {COMPILE_S['resnet18_imagenet']} s, a ResNet-20 compile ≈ "
            f"{COMPILE_S['resnet20']} s)") in readme
    tolerances = (correctness.BF16_LOSS_RTOL, correctness.BF16_GLOBAL_GRAD_RTOL, correctness.BF16_PARAMETERS_OVER_SHARE,
                  correctness.BF16_PARAMETER_GRAD_RTOL)
    assert tolerances == (0.02, 0.10, 0.05, 0.3)
    assert ("loss differs by ≤ 2%, all gradients together by ‖ΔG‖/‖G‖ ≤ 0.10, and at most 5% of the parameter "
            "tensors by more than 0.3 each") in readme


def test_readme_demo_paragraph_is_the_demo():
    """README Quick start: the demo's data (1,797 digits, 1,400 / 397, 32×32×3) and recipe (15 epochs, SGD lr 0.11
    cosine, batch 64, Tmin 1e-3, t capped at 1) are what launch/demo.sh and its recipe give."""
    from sklearn.datasets import load_digits as sklearn_digits

    from sdbnn.engine.config import load_recipe
    from sdbnn.pipelines import load_digits

    readme = (ROOT / "README.md").read_text()
    start = readme.index("The demo (`launch/demo.sh`")
    paragraph = readme[start:readme.index("\n\n", start)].replace("\n", " ")
    raw = sklearn_digits()
    train, held_out = load_digits()
    assert raw.images.shape[1:] == (8, 8) and train.images.shape[1:] == (3, 32, 32)
    assert (len(raw.target), len(train), len(held_out)) == (1797, 1400, 397)
    assert (f"{len(raw.target):,} real 8×8 digits, shipped inside the package ({len(train):,} train / "
            f"{len(held_out)} held out, upsampled to 32×32, 3 channels)") in paragraph
    demo = (ROOT / "launch" / "demo.sh").read_text()
    assert "--model resnet20 --dataset digits --epochs 15 --batch-size 64 --t-cap 1 " in demo
    recipe = load_recipe(ROOT / "launch" / "configs" / "cifar10_resnet20.yaml")  # launch/cifar.py's default recipe
    assert (recipe["optimizer"], recipe["lr"], recipe["lr_schedule"], recipe["t_min"]) == ("sgd", 0.11, "cosine", 1e-3)
    assert ("15 epochs, SGD lr 0.11 cosine, batch 64, EDE schedule from Tmin = 1e-3, capped at t = 1."
            in paragraph)


def test_late_epoch_numbers_are_the_committed_study():
    """The late-epoch sections of README and docs/method.md quote the study in
    studies/results/late-epoch/late-epoch.json (commit d53d06c): its table, the BatchNorm control, the last epochs'
    diagnostics (means over seeds) and seed 0's collapse. Rerunning the study rewrites the file; this keeps the prose
    from going stale."""
    import json

    study = json.loads((ROOT / "studies" / "results" / "late-epoch" / "late-epoch.json").read_text())["settings"]
    readme = (ROOT / "README.md").read_text()
    readme = readme[readme.index("### Late-epoch collapse"):readme.index("\n## Data")].replace("\n", " ")
    method = (ROOT / "docs" / "method.md").read_text()
    method = method[method.index("## Late-epoch collapse"):method.index("\n## Precision")].replace("\n", " ")

    def pct(value: float) -> str:
        return f"{100 * value:.1f}"

    labels = {"digits15": "digits, 15 epochs", "digits30": "digits, 30 epochs", "mnist15": "MNIST-5k, 15 epochs"}
    for setting, label in labels.items():
        paper, capped = study[setting]["variants"]["paper"], study[setting]["variants"]["tcap1"]
        seeds = len(paper["runs"])
        assert (f"| {label} | paper | {seeds} | {pct(paper['final_mean'])} ± {pct(paper['final_std'])} | "
                f"{pct(paper['best_mean'])} ± {pct(paper['best_std'])} | "
                f"{pct(paper['drop_mean'])} ± {pct(paper['drop_std'])} |") in readme, setting
        final, best = capped["vs_baseline"]["final"], capped["vs_baseline"]["best"]
        assert (f"| {label} | `--t-cap 1` | {len(capped['runs'])} | {pct(capped['final_mean'])} ± "
                f"{pct(capped['final_std'])} (+{pct(final['difference'])}, p {final['p_value']:.2f}) | "
                f"{pct(capped['best_mean'])} ± {pct(capped['best_std'])} (+{pct(best['difference'])}, "
                f"p {best['p_value']:.2f}) | {pct(capped['drop_mean'])} ± {pct(capped['drop_std'])} |") in readme, setting
    recalibrated = ", ".join(f"{pct(study[s]['variants']['paper']['final_mean'])} → "
                             f"{pct(study[s]['variants']['paper']['recalibrated_mean'])}% on {name}"
                             for s, name in (("digits15", "digits-15"), ("digits30", "digits-30"), ("mnist15", "MNIST-5k")))
    bests = " / ".join(pct(study[s]["variants"]["paper"]["best_mean"]) for s in labels)
    assert f"(final {recalibrated}, against bests of {bests}%)" in readme
    drops = lambda variant: [pct(study[s]["variants"][variant]["drop_mean"]) for s in labels]  # noqa: E731
    gains = [f"+{pct(study[s]['variants']['tcap1']['vs_baseline']['best']['difference'])}" for s in labels]
    p_min = min(study[s]["variants"]["tcap1"]["vs_baseline"]["best"]["p_value"] for s in labels)
    assert (f"(best − final {', '.join(drops('tcap1')[:2])} and {drops('tcap1')[2]} points, against "
            f"{', '.join(drops('paper')[:2])} and {drops('paper')[2]} for the paper's schedule)") in method
    assert f"({', '.join(gains)} points, Welch p ≥ 0.6)" in method and p_min >= 0.6

    digits15 = study["digits15"]["variants"]
    last, before, earlier = digits15["paper"]["last_epochs"][-1], *digits15["paper"]["last_epochs"][-2:-4:-1]
    capped_last = digits15["tcap1"]["last_epochs"][-1]
    assert (f"in the last epoch (t = {last['t']:.2f}, lr {last['lr']:.2g}) the gradient norm's median jumps to "
            f"{last['grad_norm_median']:.0f} ({before['grad_norm_median']:.1f} the epoch before, "
            f"{earlier['grad_norm_median']:.2f} the one before that; {capped_last['grad_norm_median']:.2f} with the cap), "
            f"{100 * last['weight_flip_fraction']:.2f}% of all binary weights flip "
            f"({100 * capped_last['weight_flip_fraction']:.2f}% with the cap)") in readme
    assert (f"({pct(last['train_mode_top1'])}% top-1 in train mode, {pct(last['eval_mode_top1'])}% in eval mode on the "
            f"same held-out batch; {pct(capped_last['train_mode_top1'])} / {pct(capped_last['eval_mode_top1'])}% "
            "with the cap)") in readme
    assert (f"the last epoch's median total gradient norm is {last['grad_norm_median']:.0f} "
            f"(max {last['grad_norm_max']:.0f}), against {before['grad_norm_median']:.1f} the epoch before and "
            f"{capped_last['grad_norm_median']:.2f} with `t_cap = 1`; {100 * last['weight_flip_fraction']:.2f}% of the "
            f"binary weights flip within that epoch ({100 * capped_last['weight_flip_fraction']:.2f}% with the cap)"
            ) in method
    assert (f"({pct(last['train_mode_top1'])}% top-1 with batch statistics, {pct(last['eval_mode_top1'])}% with the "
            "running statistics") in method
    seed0 = next(run for run in digits15["paper"]["runs"] if run["seed"] == 0)
    collapse = f"{100 * seed0['final_top1']:.0f}% after a best"
    assert f"ended seed 0 at {collapse} of {100 * seed0['best_top1']:.0f}%" in readme
    assert f"one seed of five at {collapse} epoch of {100 * seed0['best_top1']:.0f}%" in method


def test_readme_kernel_resources_numbers_are_the_committed_files():
    """README §Kernel resources, without a GPU quotes benchmarks/results/kernel-resources-triton{3.8.0,3.6.0}-*.json:
    the commit, the specializations and targets, the spills, registers, act_sign occupancy on sm_90 and the lowest
    loads in flight per SM (and what has them)."""
    import json

    readme = (ROOT / "README.md").read_text()
    start = readme.index("### Kernel resources, without a GPU")
    section = readme[start:readme.index("\n## ", start)].replace("\n", " ")
    files = {version: json.loads(next((ROOT / "benchmarks" / "results").glob(f"kernel-resources-triton{version}-*.json"))
                                 .read_text()) for version in ("3.8.0", "3.6.0")}
    rows = [row for result in files.values() for row in result["rows"]]
    assert {result["commit"][:7] for result in files.values()} == {"c9b9da5"}
    assert not any(result["uncommitted_changes"] or result["target_misses"] for result in files.values())
    assert {result["specializations"] for result in files.values()} == {438}
    assert {tuple(result["archs"]) for result in files.values()} == {("sm_80", "sm_90", "sm_100")}
    assert all(row["compiled"] for row in rows)
    occupancy = min(row["occupancy"] for row in rows if row["kernel"].startswith("act_sign") and row["arch"] == "sm_90")
    assert (f"Measured at commit c9b9da5 (438 specializations × sm_80/90/100, with the CI's triton 3.8 and the GPU "
            f"machines' 3.6): all met — {max(row['spill_bytes'] for row in rows)} spill bytes, at most "
            f"{max(row['registers'] for row in rows)} registers, `act_sign` ≥ {100 * occupancy:.0f}% occupancy on "
            "sm_90") in section
    lowest = min(row["read_bytes_in_flight_per_sm"] for row in rows)
    assert {(row["example"]["dtype"], tuple(row["example"]["shape"][2:])) for row in rows
            if row["read_bytes_in_flight_per_sm"] == lowest} >= {("bf16", (7, 7))}
    assert f"(~{lowest // 1024} KB: bf16 7×7 planes)" in section


def test_readme_and_method_restate_these_code_constants():
    """Step counts, exit codes and recipe values that README and docs/method.md quote from the code."""
    from sdbnn.engine import preemption, trainer
    from sdbnn.engine.config import load_recipe
    from sdbnn.layers import DEFAULT_K, DEFAULT_T
    from sdbnn.reference import T_MAX

    readme = re.sub(r"\s+", " ", (ROOT / "README.md").read_text())
    method = re.sub(r"\s+", " ", (ROOT / "docs" / "method.md").read_text())
    every = trainer.CHECK_EVERY
    assert f"(checked every {every} steps; both tested)" in readme
    assert f"are read every {every} steps and once per epoch" in readme
    assert f"several: within {every} steps, where the ranks exchange their state" in readme
    assert f"**exit with code {preemption.REQUEUE_EXIT_CODE}** (`EX_TEMPFAIL`" in readme
    configs = ROOT / "launch" / "configs"
    stages = [load_recipe(configs / f"imagenet_stage{stage}.yaml") for stage in (1, 2)]
    minutes = {stage["checkpoint_every_min"] for stage in stages}
    assert len(minutes) == 1 and f"(off for CIFAR, {minutes.pop()} in the ImageNet recipes)" in readme
    stage1 = stages[0]
    assert (stage1["optimizer"], stage1["lr"], stage1["lr_schedule"], stage1["weight_decay"]) == ("adam", 1e-3, "linear", 1e-5)
    assert "ImageNet stage 1 is W32/A1 (Adam 1e-3 linear decay, weight decay 1e-5 on conv weights)" in readme
    assert {(stage["batch_size"], stage["epochs"], stage["lr"]) for stage in stages} == {(512, 256, 1e-3)}
    assert "batch 512 over 2 GPUs, Adam lr 1e-3 with linear decay to 0 over 256 epochs in each stage" in method
    assert [stage["weight_decay"] for stage in stages] == [1e-5, 0]
    assert (T_MAX, DEFAULT_K, DEFAULT_T) == (10, 10.0, 0.1)
    batch = load_recipe(configs / "cifar10_resnet20.yaml")["batch_size"]  # the official code's test batches too
    scored = 10_000 // batch * batch  # it dropped the last partial batch of the 10,000 test images
    assert f"{50_000 // batch} steps per epoch on 50,000 images" in method
    assert f"({scored:,} of 10,000 images, {10_000 // batch} batches of {batch})" in method
    assert f"The official code scored CIFAR on {scored:,} of 10,000 test images" in readme
    assert f"Tmax = {T_MAX:g} on every model" in method and "(initially k = 10, t = 0.1," in method
