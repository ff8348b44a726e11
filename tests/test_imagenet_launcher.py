"""The two-stage ImageNet launcher on real photos (foolbox's 20 ImageNet JPEGs as train/ and val/), 1 and 2 ranks, and
stage 1 on two "nodes"."""

import pytest
import torch
from helpers import LAUNCH, require_optional, run_script, run_two_nodes, torch_threads

import sdbnn
from sdbnn import testing
from sdbnn.engine import cli
from sdbnn.engine.runs import WEIGHTS, Run

TINY = ["--epochs", "1", "--batch-size", "4", "--resolution", "64", "--workers", "0"]


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory):
    require_optional("foolbox", "the real test images ship in it")
    root = tmp_path_factory.mktemp("imagenet")
    photos = sorted(testing.foolbox_data().glob("imagenet_*.jpg"))
    for split in ("train", "val"):
        for photo in photos:
            folder = root / split / photo.stem.split("_")[-1]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / photo.name).write_bytes(photo.read_bytes())
    return root


@pytest.fixture(scope="module")
def teacher_weights(tmp_path_factory):
    """A ResNet-34 state dict standing in for the user's pretrained teacher (its values do not matter here)."""
    path = tmp_path_factory.mktemp("teacher") / "resnet34.safetensors"
    sdbnn.save_weights(sdbnn.create_model("resnet34"), path)
    return path


def launch(*args, processes=1):
    return run_script(LAUNCH / "imagenet.py", *args, processes=processes)


def launch_in_process(capsys, *args) -> tuple[int, str]:
    """launch/imagenet.py's main (the script is `sys.exit(imagenet_main())`) in this process, one thread: (exit
    code, stderr), without an interpreter start; the script itself runs in the tests that train with a teacher."""
    capsys.readouterr()
    with torch_threads(1):
        code = cli.imagenet_main(list(args))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("processes", [1, pytest.param(2, marks=pytest.mark.slow)])  # 2 ranks + resume: -m slow
def test_both_stages_run_and_write_outputs(imagenet_dir, teacher_weights, tmp_path, processes):
    result = launch("--data-dir", str(imagenet_dir), *TINY, "--teacher-weights", str(teacher_weights),
                    "--output-dir", str(tmp_path), processes=processes)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(f"world size {processes},") == 2
    for stage in ("stage1", "stage2"):
        run = Run(tmp_path / stage)
        assert run.finished and run.resumable and [r["epoch"] for r in run.records()] == [0] and run.weights()
    stage2 = Run(tmp_path / "stage2").config()
    assert stage2.init_from == str(Run(tmp_path / "stage1").path(WEIGHTS))
    assert stage2.model_options == {"binary_weights": True, "wsd": True} and stage2.weight_decay == 0.0
    assert stage2.teacher == "resnet34" and stage2.kd_alpha == 1.0
    if processes == 2:  # the same command with --resume: rank 0 finds both stages finished, no rank trains
        again = launch("--data-dir", str(imagenet_dir), *TINY, "--teacher-weights", str(teacher_weights),
                       "--output-dir", str(tmp_path), "--resume", processes=processes)
        assert again.returncode == 0, again.stderr[-3000:]
        assert again.stdout.count("holds a finished run: nothing to train") == 2 and "world size" not in again.stdout


def test_stage2_starts_from_stage1_and_teacher_stays_frozen(imagenet_dir, teacher_weights, tmp_path):
    from sdbnn.engine.trainer import Trainer

    (stage1_config, stage2_config), _ = cli.imagenet_configs(
        ["--data-dir", str(imagenet_dir), *TINY, "--teacher-weights", str(teacher_weights), "--output-dir",
         str(tmp_path)])
    stage1 = Trainer(stage1_config)
    assert all(not m.binary_weights and not m.wsd for m in stage1.model.modules() if isinstance(m, sdbnn.SDConv2d))
    teacher_before = {k: v.clone() for k, v in stage1.teacher.state_dict().items()}
    stage1.fit()
    assert not stage1.teacher.training and all(not p.requires_grad for p in stage1.teacher.parameters())
    assert all(torch.equal(v, stage1.teacher.state_dict()[k]) for k, v in teacher_before.items())

    stage2 = Trainer(stage2_config)
    weights = Run(tmp_path / "stage1").weights()
    assert all(torch.equal(weights[k], v) for k, v in stage2.model.state_dict().items())
    convs = [m for m in stage2.model.modules() if isinstance(m, sdbnn.SDConv2d)]
    assert all(m.binary_weights and m.wsd and m.alpha.requires_grad for m in convs)
    assert {m.weight_surrogate for m in convs} == {"clip"} and {m.act_surrogate for m in convs} == {"approx"}


def test_stage2_without_stage1_is_a_clear_error(imagenet_dir, teacher_weights, tmp_path, capsys):
    code, err = launch_in_process(capsys, "--data-dir", str(imagenet_dir), *TINY, "--teacher-weights",
                                  str(teacher_weights), "--stage", "2", "--output-dir", str(tmp_path))
    assert code == 2 and "run --stage 1 first" in err


@pytest.mark.slow  # the FFCV loader itself is tested in the default set (test_pipelines.py)
@pytest.mark.optional("ffcv")
@pytest.mark.timeout(400)
def test_stage1_trains_from_ffcv_files(imagenet_dir, tmp_path):
    from sdbnn.pipelines.ffcv_data import write_beton

    betons = tmp_path / "betons"
    for split in ("train", "val"):
        write_beton(imagenet_dir / split, betons / f"{split}.beton", write_mode="jpg", max_resolution=96, workers=2)
    # what is tested is the launcher reading .beton files (the teacher is tested above): no teacher, one epoch
    result = launch("--data-dir", str(betons), *TINY, "--no-teacher", "--stage", "1",
                    "--output-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "using torchvision" not in result.stderr  # the .beton files were read, not a fallback
    records = Run(tmp_path / "run" / "stage1").records()
    assert [r["epoch"] for r in records] == [0] and all(r["val_samples"] == 20 for r in records)


def test_missing_teacher_weights_is_one_clear_error_and_no_teacher_opts_out(imagenet_dir, tmp_path, capsys):
    # without weights the recipes would distill from a randomly initialised ResNet-34: refused before anything starts
    code, err = launch_in_process(capsys, "--data-dir", str(imagenet_dir), *TINY, "--output-dir",
                                  str(tmp_path / "refused"))
    assert code == 2
    assert "no teacher weights were given" in err and "--no-teacher" in err
    assert err.count("error:") == 1 and not (tmp_path / "refused").exists()
    code, err = launch_in_process(capsys, "--data-dir", str(imagenet_dir), *TINY, "--no-teacher", "--stage", "1",
                                  "--output-dir", str(tmp_path / "plain"))
    assert code == 0, err[-3000:]
    config = Run(tmp_path / "plain" / "stage1").config()
    assert config.teacher is None and config.teacher_weights is None


@pytest.mark.slow
def test_stage1_on_two_nodes_equals_two_processes_on_one_node(imagenet_dir, teacher_weights, tmp_path):
    stage1 = ["--data-dir", str(imagenet_dir), *TINY, "--teacher-weights", str(teacher_weights), "--stage", "1"]
    one_node = launch(*stage1, "--output-dir", str(tmp_path / "one_node"), processes=2)
    assert one_node.returncode == 0, one_node.stderr[-3000:]
    elsewhere = tmp_path / "not_on_node_0"  # machine 1 needs the data and the teacher, not the run directory
    nodes = run_two_nodes(LAUNCH / "imagenet.py", lambda machine: [
        *stage1, "--output-dir", str(tmp_path / "two_nodes" if machine == 0 else elsewhere)])
    assert [node.returncode for node in nodes] == [0, 0], nodes[0].stderr[-3000:] + nodes[1].stderr[-3000:]
    assert "world size 2," in nodes[0].stdout and not elsewhere.exists()
    a, b = Run(tmp_path / "one_node" / "stage1").weights(), Run(tmp_path / "two_nodes" / "stage1").weights()
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
