"""The reproduction harness (paper rows → recipes → achieved vs published) and the ASD/WSD ablation runner."""

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import LAUNCH, ROOT, cpu_env, run_script, torch_threads

import sdbnn
from sdbnn.engine import ablations, cli, reproduce, runs
from sdbnn.engine.config import TrainConfig, load_paper_result, load_recipe
from sdbnn.engine.metrics import MetricsLog

CONFIGS = LAUNCH / "configs"
DIGITS = ["--dataset", "digits", "--batch-size", "64"]
# 128 digits of each split (2 steps an epoch): the harness's bookkeeping is what these runs check, not the learning
FEW_DIGITS = [*DIGITS, "--max-images", "128"]

# docs/method.md §Published results, copied by hand: the recipes must record exactly these
PUBLISHED = {
    "cifar10_resnet20": (86.9, None),
    "cifar10_vgg_small": (90.8, None),
    "cifar10_resnet18_cifar": (92.5, None),
    "imagenet_stage1": (67.6, 87.4),
    "imagenet_stage2": (66.5, 86.7),
}


def script(name, *args):
    return run_script(LAUNCH / name, *args)


def in_process(main, capsys, *args) -> tuple[int, str, str]:
    """A launch/ script's main (each script is `sys.exit(main())`) in this process: (exit code, stdout, stderr),
    without an interpreter start for a command that trains nothing."""
    capsys.readouterr()
    with torch_threads(1):
        code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_run_reader_reads_a_run_and_the_ablation_layout(tmp_path):
    directory = runs.run_directory(tmp_path, "asd", 3)
    assert directory == tmp_path / "asd" / "seed3"
    directory.mkdir(parents=True)
    run = runs.Run(directory)
    assert not run.finished and not run.resumable and run.records() == []
    with pytest.raises(FileNotFoundError, match=f"{directory} is not a run directory: config.yaml is missing"):
        run.config()
    TrainConfig(model="resnet20", dataset="digits", model_options={"num_classes": 7}).save(directory / "config.yaml")
    metrics = MetricsLog(directory)
    for epoch in range(2):
        metrics.append({"epoch": epoch, "val_top1": 0.25 * (epoch + 1)})
    assert run.config().model_options == {"num_classes": 7} and run.config_values()["dataset"] == "digits"
    assert [record["val_top1"] for record in run.records()] == [0.25, 0.5]
    with pytest.raises(FileNotFoundError, match="summary.json is missing"):
        run.summary()
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing"):
        run.model()
    sdbnn.save_weights(sdbnn.create_model("resnet20", num_classes=10), directory / "model.safetensors")
    with pytest.raises(sdbnn.CheckpointError, match="does not fit resnet20"):
        run.model()
    trained = sdbnn.create_model("resnet20", num_classes=7)
    sdbnn.save_weights(trained, directory / "model.safetensors")
    (directory / "summary.json").write_text(json.dumps({"final": {"val_top1": 0.5}}))
    assert run.finished and run.summary()["final"]["val_top1"] == 0.5
    model = run.model()
    assert not model.training and all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                                        trained.state_dict().values()))
    for variant, seed in (("asd", 1), ("wsd", 0)):  # unfinished runs and stray folders are not listed
        runs.run_directory(tmp_path, variant, seed).mkdir(parents=True)
    for folder in (tmp_path / "asd" / "seed_notes", runs.run_directory(tmp_path, "wsd", 10),
                   runs.run_directory(tmp_path, "wsd", 2)):
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text("{}")
    found = runs.finished_runs(tmp_path)
    assert list(found) == [("asd", 3), ("wsd", 2), ("wsd", 10)]
    assert found["wsd", 10].directory == runs.run_directory(tmp_path, "wsd", 10)


def test_every_paper_row_has_a_recipe_with_its_published_numbers(capsys):
    for recipe, (top1, top5) in PUBLISHED.items():
        paper = load_paper_result(CONFIGS / f"{recipe}.yaml")
        assert (paper["top1"], paper.get("top5")) == (top1, top5), recipe
        config = TrainConfig.from_dict(load_recipe(CONFIGS / f"{recipe}.yaml"))  # the paper block is not config
        assert config.epochs >= 256
    code, listing, _ = in_process(reproduce.main, capsys, "--list")
    assert code == 0 and all(name in listing for name in PUBLISHED)


def test_reproduce_trains_the_recipe_and_compares_with_the_paper(tmp_path, capsys):
    run_dir = tmp_path / "run"
    result = script("reproduce.py", "cifar10_resnet20", *FEW_DIGITS, "--epochs", "2", "--output-dir", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    config = runs.Run(run_dir).config()
    assert config.lr == 0.11 and config.t_min == 1e-3  # the recipe's values, under the overrides
    summary = runs.Run(run_dir).summary()
    report = json.loads((run_dir / "reproduction.json").read_text())
    assert report["paper"]["top1"] == 86.9
    assert report["best"]["top1"] == pytest.approx(100 * summary["best"]["val_top1"])
    assert report["final"]["top1"] == pytest.approx(100 * summary["final"]["val_top1"])
    assert set(report["differs_from_recipe"]) == {"dataset", "epochs", "batch_size", "max_images"}
    assert "86.9" in result.stdout and "warning: this run is not the paper's setup" in result.stdout
    code, out, _ = in_process(reproduce.main, capsys, "cifar10_resnet20", "--compare", str(run_dir))
    assert code == 0 and f"{report['best']['top1']:.2f}" in out
    code, _, err = in_process(reproduce.main, capsys, "cifar10_resnet21", "--compare", str(run_dir))
    assert code == 2 and "unknown row 'cifar10_resnet21'" in err
    code, _, err = in_process(reproduce.main, capsys, "cifar10_resnet20", "--compare", str(tmp_path))
    assert code == 2 and "no finished run" in err


# A built-in variant and one defined by launcher flags, two seeds, two epochs with diagnostics, one thread (the
# late-epoch study's setting): trained once, read by the runner's test and the study's test.
ABLATION_ARGS = ["--variants", "baseline", "--variant", "tcap1=--t-cap 1", "--seeds", "0", "1", *FEW_DIGITS,
                 "--epochs", "2", "--diagnostics"]
ONE_THREAD = cpu_env(OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def ablation_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablations") / "digits1"  # the study names a setting after its folder
    trained = run_script(LAUNCH / "ablations.py", *ABLATION_ARGS, "--output-dir", str(root), env=ONE_THREAD)
    assert trained.returncode == 0, trained.stderr[-3000:]
    return root


def test_ablation_runner_trains_each_variant_and_seed_and_tabulates(ablation_root, capsys):
    root = ablation_root
    finished = runs.finished_runs(root)
    assert list(finished) == [(variant, seed) for variant in ("baseline", "tcap1") for seed in (0, 1)]
    configs = {variant: finished[(variant, 1)].config() for variant in ("baseline", "tcap1")}
    assert configs["baseline"].model_options == {"asd": "off", "wsd": False} and configs["baseline"].t_cap is None
    assert configs["tcap1"].model_options == {} and configs["tcap1"].t_cap == 1.0
    assert {configs[variant].seed for variant in configs} == {1}
    table = json.loads((root / "ablations.json").read_text())["variants"]
    for variant in ("baseline", "tcap1"):
        finals = [finished[(variant, s)].summary()["final"]["val_top1"] for s in (0, 1)]
        assert table[variant]["final_mean"] == pytest.approx(statistics.fmean(finals))
        assert table[variant]["final_std"] == pytest.approx(statistics.stdev(finals))
    versus = table["tcap1"]["vs_baseline"]["best"]
    assert versus["difference"] == pytest.approx(table["tcap1"]["best_mean"] - table["baseline"]["best_mean"])
    assert 0 <= versus["p_value"] <= 1 and "vs_baseline" not in table["baseline"]
    assert (root / "ablations.png").stat().st_size > 0 and (root / "ablations_curves.png").stat().st_size > 0
    assert "| baseline | 2 |" in (root / "ablations.md").read_text()
    summary_file = finished[("baseline", 0)].path(runs.SUMMARY)
    before = summary_file.stat().st_mtime_ns
    code, _, err = in_process(ablations.main, capsys, *ABLATION_ARGS, "--output-dir", str(root))
    assert code == 0, err[-3000:]  # finished runs are reused, not retrained
    assert summary_file.stat().st_mtime_ns == before
    code, _, err = in_process(ablations.main, capsys, "--seed", "3", *DIGITS)
    assert code == 2 and "--seed is chosen by the ablation runner" in err



@pytest.mark.slow
def test_a_run_is_the_same_alone_or_after_other_runs_in_the_runners_process(ablation_root, tmp_path):
    # tcap1 seed 1 trained last in the fixture's process (after baseline seeds 0, 1 and tcap1 seed 0); alone it must
    # give the same weights bit for bit: nothing a run leaves in the process may change the next one
    alone = tmp_path / "alone"
    args = [arg for arg in ABLATION_ARGS if arg not in ("--variants", "baseline")]
    args[args.index("--seeds") + 1:args.index("--seeds") + 3] = ["1"]
    trained = run_script(LAUNCH / "ablations.py", *args, "--output-dir", str(alone), env=ONE_THREAD)
    assert trained.returncode == 0, trained.stderr[-3000:]
    alone_bytes, after_others_bytes = (runs.Run(runs.run_directory(root, "tcap1", 1)).path(runs.WEIGHTS).read_bytes()
                                       for root in (alone, ablation_root))
    assert alone_bytes == after_others_bytes

def test_imagenet_rows_run_the_two_stage_launcher():
    launcher_args = ["--data-dir", "/data/imagenet", "--output-dir", "runs/in"]
    main, argv, run_dir = reproduce.launcher_call("imagenet_stage1", launcher_args)
    assert main is cli.imagenet_main and argv[:2] == ["--stage", "1"] and run_dir == Path("runs/in/stage1")
    main, argv, run_dir = reproduce.launcher_call("imagenet_stage2", launcher_args)
    assert argv[:2] == ["--stage", "both"] and run_dir == Path("runs/in/stage2")  # stage 2 needs stage 1 first
    main, argv, run_dir = reproduce.launcher_call("cifar10_vgg_small", ["--output-dir", "runs/v"])
    assert main is cli.cifar_main and argv[:2] == ["--model", "vgg_small"] and run_dir == Path("runs/v")


def test_ablation_significance_is_welchs_t_test():
    # means 2 and 0, both sample variances 1, three runs each: t = 2 / sqrt(2/3) = 2.449 on 4 degrees of freedom
    result = ablations.compare_with([{"x": v} for v in (1.0, 2.0, 3.0)], [{"x": v} for v in (-1.0, 0.0, 1.0)], "x")
    assert result["difference"] == 2.0 and result["p_value"] == pytest.approx(0.0705, abs=1e-4)
    assert ablations.compare_with([{"x": 1.0}], [{"x": 0.0}, {"x": 1.0}], "x")["p_value"] is None


def test_ablation_variants_can_be_any_launcher_flags():
    args, launcher_args = ablations.parse_args(
        ["--variant", "paper=", "--variant", 'stable=--t-cap 1 --bn-recalibration', "--baseline", "paper",
         "--dataset", "digits", "--epochs", "2"])
    assert args.definitions == {"paper": [], "stable": ["--t-cap", "1", "--bn-recalibration"]}
    assert args.baseline == "paper" and launcher_args == ["--dataset", "digits", "--epochs", "2"]
    config, _ = cli.cifar_config(ablations.variant_argv(launcher_args, args.definitions["stable"], 3, Path("r")))
    assert (config.t_cap, config.bn_recalibration, config.seed, config.output_dir) == (1.0, True, 3, "r")
    with pytest.raises(ValueError, match="not one of the variants"):
        ablations.parse_args(["--variant", "a=", "--baseline", "b"])
    args, _ = ablations.parse_args(["--variants", "baseline", "wsd"])
    assert list(args.definitions) == ["baseline", "wsd"] and args.baseline == "baseline"
    # the built-in variants' flags give the model options they are named after (baseline's, through the runner: above)
    options = {name: cli.cifar_config(ablations.variant_argv([], flags, 0, Path("r")))[0].model_options
               for name, flags in ablations.VARIANTS.items()}
    assert options == {"baseline": {"asd": "off", "wsd": False}, "asd": {"wsd": False}, "wsd": {"asd": "off"},
                       "asd+wsd": {}, "static_asd+wsd": {"asd": "static"}}


def test_late_epoch_study_tabulates_recipe_options_with_the_batchnorm_control(ablation_root, tmp_path):
    root = ablation_root
    out = tmp_path / "results"
    result = subprocess.run([sys.executable, "-m", "studies.late_epoch", str(root), "--baseline", "baseline",
                             "--out", str(out)], capture_output=True, text=True, env=ONE_THREAD, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    study = json.loads((out / "late-epoch.json").read_text())["settings"]["digits1"]["variants"]
    assert set(study) == {"baseline", "tcap1"} and "vs_baseline" in study["tcap1"]
    for variant, row in study.items():
        seeds = [runs.Run(runs.run_directory(root, variant, s)) for s in (0, 1)]
        summaries = [run.summary() for run in seeds]
        assert [r["final_top1"] for r in row["runs"]] == [s["final"]["val_top1"] for s in summaries]
        assert all(0.0 <= r["recalibrated_top1"] <= 1.0 for r in row["runs"])
        assert [e["epoch"] for e in row["last_epochs"]] == [0, 1]  # both epochs of the diagnostics, seed means
        flips = [record["weight_flip_fraction"] for run in seeds for record in run.records()]
        assert row["last_epochs"][1]["weight_flip_fraction"] == pytest.approx(statistics.fmean(flips[1::2]))
    markdown = (out / "late-epoch.md").read_text()
    assert "| digits1 | tcap1 | 2 |" in markdown and "## Diagnostics, last epochs — digits1, baseline" in markdown
    assert (out / "digits1-ablations_curves.png").stat().st_size > 0
    empty = subprocess.run([sys.executable, "-m", "studies.late_epoch", str(tmp_path / "nothing"), "--out",
                            str(out)], capture_output=True, text=True, env=ONE_THREAD, cwd=ROOT, timeout=120)
    assert empty.returncode == 2 and "holds no finished ablation run" in empty.stderr
