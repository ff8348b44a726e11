"""The benchmarks run end to end (CPU smoke runs) and never lose results: each section is written as it ends, a
failing section leaves the others' files, a time budget skips what it must and says so; the GPU session's script
runs every stage at tiny sizes on CPU, so the one GPU run cannot crash for a reason a CPU could have shown."""

import json
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import cpu_env, require_optional

from benchmarks import common, kernels
from benchmarks.gpu_session import stages
from benchmarks.gpu_session.plan import TINY_PLAN
from studies import predictions

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # Inductor compiles every case: the in-process test below checks the rows with the eager backend
def test_kernel_benchmark_quick(tmp_path):
    # on CPU the fused provider is the ops' CPU math (the default setting)
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", "kernels", "--surrogate", "approx",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    (json_file,) = tmp_path.glob("*.json")
    report = json.loads(json_file.read_text())["kernels"]
    assert report["copy_bandwidth_gbps"] > 0 and report["surrogate"] == "approx"
    providers = {(row["op"], row["case"], row["provider"]) for row in report["rows"]}
    for op in ("act_sign", "weight_sign"):
        for case in ("tiny.nchw", "tiny.nhwc"):
            assert {(op, case, p) for p in ("fused", "eager", "compiled")} <= providers
    fused = [row for row in report["rows"] if row["provider"] == "fused"]
    assert all(row["forward_backward_ms"] > 0 and set(row["speedup_vs"]) == {"eager", "compiled"} for row in fused)
    assert "| act_sign |" in json_file.with_suffix(".md").read_text()


def test_kernel_benchmark_compiles_each_case_on_its_own(monkeypatch):
    # Every case used to compile the same reference lambda: dtype × layout × grad variants piled onto one code
    # object until dynamo's recompile limit, which fullgraph=True turns into FailOnRecompileLimitHit.
    cases = kernels.QUICK_CASES
    jobs = [(op, case, dtype) for op in ("act_sign", "weight_sign") for case in cases
            for dtype in (torch.float32, torch.bfloat16)]
    with torch._dynamo.config.patch(recompile_limit=2):  # each case compiles twice (forward, forward+backward)
        result = kernels.run(True, torch.device("cpu"), jobs=jobs, compile_backend="eager")
        assert len(result["rows"]) == 3 * len(jobs)
        assert {row["dtype"] for row in result["rows"]} == {"float32", "bfloat16"}
        assert result["copy_bandwidth_gbps"] > 0
        fused = [row for row in result["rows"] if row["provider"] == "fused"]
        assert len(fused) == len(jobs)
        assert all(row["forward_backward_ms"] > 0 and set(row["speedup_vs"]) == {"eager", "compiled"} for row in fused)
        assert "| act_sign |" in kernels.markdown_table(result) and "| weight_sign |" in kernels.markdown_table(result)
        monkeypatch.setattr(kernels, "own_code", lambda fn: fn)  # the old way: one shared code object
        torch._dynamo.reset()
        with pytest.raises(torch._dynamo.exc.FailOnRecompileLimitHit):
            kernels.run(True, torch.device("cpu"), jobs=jobs, compile_backend="eager")
    torch._dynamo.reset()


def test_loader_benchmark_without_foolbox(tmp_path, monkeypatch):
    # The GPU machines have no foolbox: the benchmark makes synthetic JPEGs and CIFAR pixels instead.
    from benchmarks import loaders
    from sdbnn.pipelines import read_cifar

    monkeypatch.setattr(loaders, "foolbox_data", lambda: None)
    images = read_cifar(loaders.make_cifar_root(tmp_path / "cifar", 45), train=True)
    assert len(images.labels) == 5 * 45  # five training batches of 45
    folder = loaders.make_imagenet_folder(tmp_path / "imagenet", 7)
    assert len(list(folder.glob("*/*.jpg"))) == 7
    measured = {f"{name}_{key}": 1.0 for name in ("imagenet_torchvision", "cifar_torchvision", "cifar_device_resident")
                for key in ("images_per_s", "cpu_ms_per_image")}
    contention = {"other_processes_cores": None}
    table = loaders.markdown_table({"real_images": False, "workers": 1, "rounds": 1, "contention": contention,
                                    "cifar_device_over_torchvision": 2.0, "cifar_device_over_torchvision_per_round": [2.0],
                                    **measured})
    assert table.count("synthetic JPEGs") == 1 and "FFCV" not in table and "2.00× (2.00)" in table


def test_loader_benchmark_interleaves_rounds_and_records_other_load():
    from benchmarks import loaders

    played = []

    class Batches:
        def __init__(self, name, batches):
            self.name, self.batches = name, batches

        def set_epoch(self, epoch):
            played.append((self.name, epoch))

        def __iter__(self):
            return iter([(torch.zeros(4, 3, 2, 2), torch.zeros(4))] * self.batches)

    measured = loaders.timed_rounds({"a": Batches("a", 3), "b": Batches("b", 1)}, 3, torch.device("cpu"))
    # a warm-up epoch each, then rounds in alternating order
    assert played == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("b", 2), ("a", 2), ("a", 3), ("b", 3)]
    assert [len(rows) for rows in measured["per_round"].values()] == [3, 3]
    assert all(row["images_per_s"] > 0 and row["cpu_ms_per_image"] >= 0 for row in measured["per_round"]["a"])
    contention = measured["contention"]
    assert contention["cores"] >= 1 and contention["other_processes_cores"] >= 0
    assert {"load_average_1min_before", "load_average_1min_after", "timed_seconds"} <= set(contention)


def _read(report_json: Path) -> tuple[dict, str]:
    return json.loads(report_json.read_text()), report_json.with_suffix(".md").read_text()


def test_report_keeps_every_section_and_records_failures_and_budget(tmp_path):
    report = common.Report(tmp_path, "run", {"device": "cpu"}, "Run")

    def failing(section):
        section.data["rows"] = [1]
        section.save()  # partial results reach the files before the failure
        assert json.loads((tmp_path / "run.json").read_text())["first"]["rows"] == [1]
        raise ValueError("injected")

    def partly(section):
        section.data["done"] = ["a"]
        time.sleep(0.25)  # uses the budget up
        for item in ("b", "c"):
            if section.allows(item):
                section.data["done"].append(item)

    report.run("first", failing, lambda data: "table of first\n")
    report.run("second", lambda section: {"value": 2}, lambda data: f"value {data['value']}\n")
    stopped = common.Budget(0.2)
    report.run("third", partly, None, stopped)
    report.run("fourth", lambda section: {"value": 4}, None, stopped)
    result, markdown = _read(tmp_path / "run.json")
    assert result["sections"] == ["first", "second", "third", "fourth"]
    assert result["first"]["status"] == "failed" and "ValueError: injected" in result["first"]["traceback"]
    assert result["first"]["rows"] == [1] and "table of first" in markdown and "ValueError: injected" in markdown
    assert result["second"]["status"] == "ok" and result["second"]["value"] == 2 and "value 2" in markdown
    assert result["third"]["status"] == "incomplete" and result["third"]["done"] == ["a"]
    assert [item.split(":")[0] for item in result["third"]["skipped"]] == ["b", "c"]
    assert result["fourth"]["status"] == "skipped" and "value" not in result["fourth"]
    assert "- b: time budget" in markdown and "time budget spent before it started" in markdown
    assert report.failed() == ["first"]


def test_one_command_keeps_going_after_a_failing_section(tmp_path, monkeypatch):
    # In process, with the real orchestration and stand-in sections (the subprocess test below runs the real ones).
    from benchmarks import __main__ as one_command
    from benchmarks import loaders, training

    def fake_training(quick, device, models, section, variants):
        section.data["rows"] = [] if variants is None else list(variants)

    loader_numbers = {"real_images": False, "workers": 1, "rounds": 1, "contention": {"other_processes_cores": None},
                      "cifar_device_over_torchvision": 5.0, "cifar_device_over_torchvision_per_round": [5.0],
                      **{f"{name}_{key}": value for name, value in (("imagenet_torchvision", 10.0),
                                                                    ("cifar_torchvision", 1.0),
                                                                    ("cifar_device_resident", 5.0))
                         for key in ("images_per_s", "cpu_ms_per_image")}}
    monkeypatch.setattr(training, "run", fake_training)
    monkeypatch.setattr(loaders, "run", lambda options: dict(loader_numbers))
    out = tmp_path / "failing"
    assert one_command.main(["--quick", "--out", str(out), "--inject-failure", "kernels", "--variants", "sdbnn"]) == 1
    (json_file,) = out.glob("*.json")
    result, markdown = _read(json_file)
    assert result["kernels"]["status"] == "failed" and "--inject-failure kernels" in result["kernels"]["traceback"]
    assert result["training"]["status"] == "ok" and result["loaders"]["status"] == "ok"
    assert result["training"]["rows"] == ["sdbnn"]  # --variants reaches the training section
    assert result["loaders"]["cifar_device_over_torchvision"] == 5.0
    assert "## Loaders" in markdown and "| CIFAR train, device-resident loader | 5 | 5.00 | 5.00× (5.00) |" in markdown

    out = tmp_path / "no-time"
    assert one_command.main(["--quick", "--out", str(out), "--budget-s", "0"]) == 0
    (json_file,) = out.glob("*.json")
    result, markdown = _read(json_file)
    assert [result[name]["status"] for name in ("kernels", "training", "loaders")] == ["skipped"] * 3
    assert markdown.count("time budget spent before it started") == 3


@pytest.mark.slow  # every section for real: ~3 minutes on 2 cores (the orchestration's test above is the quick check)
def test_one_command_runs_every_benchmark_quick(tmp_path):
    # Without the interpreter the fused ops take their CPU path (the reference math): a smoke run of every section.
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=900, env=cpu_env(), cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    (json_file,) = tmp_path.glob("cpu-*.json")
    report = json.loads(json_file.read_text())
    assert {"device", "date", "torch", "kernels", "training", "loaders"} <= set(report)
    assert all(report[name]["status"] == "ok" for name in ("kernels", "training", "loaders"))
    rows = {row["variant"]: row for row in report["training"]["rows"] if row["model"] == "resnet20"}
    assert set(rows) == {"sdbnn", "reference_fp32", "full_precision"}
    assert all(row["train_images_per_s"] > 0 for row in rows.values())
    sd = rows["sdbnn"]
    assert sd["speedup_vs_reference_fp32"] == sd["train_images_per_s"] / rows["reference_fp32"]["train_images_per_s"]
    assert sd["ratio_to_full_precision"] == sd["train_images_per_s"] / rows["full_precision"]["train_images_per_s"]
    epoch_seconds = 50_000 / sd["train_images_per_s"] + 10_000 / sd["eval_images_per_s"]
    assert sd["recipe_epochs"] == 500 and abs(sd["projected_schedule_min"] - 500 * epoch_seconds / 60) < 1e-6
    loaders = report["loaders"]
    per_round = [device["images_per_s"] / torchvision["images_per_s"] for device, torchvision
                 in zip(loaders["per_round"]["cifar_device_resident"], loaders["per_round"]["cifar_torchvision"])]
    assert loaders["cifar_device_over_torchvision_per_round"] == per_round
    assert loaders["cifar_device_over_torchvision"] == statistics.median(per_round)  # paired rounds' median
    markdown = json_file.with_suffix(".md").read_text()
    assert all(f"## {section}" in markdown for section in ("Kernels", "Training", "Loaders"))
    assert "| resnet20 | 16 × 32 |" in markdown


def _gpu_session(tmp_path, *args, timeout=900):
    # The shell wrapper, exactly as a GPU session calls it, with this interpreter and TRITON_INTERPRET stripped.
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_session.sh"), "--tiny", *args], capture_output=True,
                          text=True, timeout=timeout, env=cpu_env(OUT=str(tmp_path), PYTHON=sys.executable), cwd=ROOT)


@pytest.mark.slow  # all six stages: ~3 minutes on 2 cores (the default set runs three stages for real below)
def test_gpu_session_runs_every_stage_tiny(tmp_path):
    result = _gpu_session(tmp_path)
    assert result.returncode == 0, result.stdout[-4000:]
    (json_file,) = tmp_path.glob("tiny-cpu-*.json")
    report, markdown = _read(json_file)
    statuses = {name: report[name]["status"] for name in report["sections"]}
    assert statuses == {"preflight": "ok", "correctness": "ok", "fused_ops": "ok", "training": "ok", "trainer": "ok",
                        "targets": "ok"}
    assert report["preflight"]["fused_path"] == "cpu" and report["preflight"]["first_kernels_s"] > 0
    checks = report["correctness"]["kernel_checks"]
    assert len(checks) == len(stages.kernel_check_matrix(TINY_PLAN))
    assert all(check["passed"] for check in checks)
    assert [model["model"] for model in report["correctness"]["models"]] == ["resnet20", "resnet18_imagenet"]
    assert all(model["passed"] for model in report["correctness"]["models"])
    assert {row["case"] for row in report["fused_ops"]["rows"]} >= {"resnet18.layer1", "resnet18.layer2"}
    trained = {(row["model"], row["variant"]) for row in report["training"]["rows"]}
    assert trained == {("resnet18_imagenet", variant) for variant in
                       ("sdbnn", "reference_fp32", "full_precision", "reference_compiled")} | {
        ("resnet20", "sdbnn"), ("resnet20", "sdbnn_cudagraphs")}
    reused = [row for row in report["training"]["rows"] if row["compiled_in"] == "an earlier section"]
    assert {(row["model"], row["variant"]) for row in reused} == {("resnet20", "sdbnn"), ("resnet18_imagenet", "sdbnn")}
    trainer = report["trainer"]
    assert len(trainer["epochs"]) == 2 and trainer["train_images_per_s"] == trainer["epochs"][1]["train_images_per_s"]
    assert trainer["trainer_over_bare_step"] == trainer["train_images_per_s"] / trainer["bare_step_images_per_s"]
    # the CUDA-graph study's predictions against this session's steps, as after a GPU's session
    compared = {(row["model"], row["variant"]) for row in predictions.compare(report, predictions.predicted_rows()[1])}
    assert compared == {("resnet18_imagenet", variant) for variant in ("sdbnn", "reference_fp32", "full_precision")} | {
        ("resnet20", "sdbnn")}
    assert len(report["targets"]["targets"]) == 5
    for heading in ("a. Preflight", "b. Correctness", "c. Fused ops", "d. Training step", "e. Trainer", "Targets"):
        assert f"## {heading}" in markdown
    assert "aot_eager" in markdown and (tmp_path / "gpu-session.log").read_text().count("== trainer: ok") == 1


def test_gpu_session_failure_and_budget_leave_results(tmp_path):
    failing = tmp_path / "failing"
    result = _gpu_session(failing, "--only", "preflight", "fused_ops", "targets", "--inject-failure", "preflight")
    assert result.returncode == 1, result.stdout[-4000:]
    (json_file,) = failing.glob("*.json")
    report, markdown = _read(json_file)
    assert report["preflight"]["status"] == "failed"
    assert "--inject-failure preflight" in report["preflight"]["traceback"]
    assert report["fused_ops"]["status"] == "ok" and report["fused_ops"]["rows"]
    assert report["targets"]["status"] == "ok" and "--inject-failure preflight" in markdown

    no_time = tmp_path / "no-time"
    result = _gpu_session(no_time, "--total-s", "0")
    assert result.returncode == 0, result.stdout[-4000:]
    (json_file,) = no_time.glob("*.json")
    report, markdown = _read(json_file)
    assert {report[name]["status"] for name in report["sections"]} == {"skipped"}
    from benchmarks.gpu_session.__main__ import STAGES

    assert markdown.count("time budget spent before it started") == len(STAGES)


def test_gpu_session_killed_mid_stage_keeps_what_was_written(tmp_path):
    # What the wrapper's hard time limit does: SIGTERM while a stage runs.
    process = subprocess.Popen([sys.executable, "-u", "-m", "benchmarks.gpu_session", "--tiny", "--out", str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=cpu_env())
    lines = []
    for line in process.stdout:  # stop it once the correctness stage has written its first checks
        lines.append(line)
        if "op checks passed so far" in line:
            process.send_signal(signal.SIGTERM)
            break
    lines += process.stdout.readlines()
    assert process.wait(timeout=120) == 1, "".join(lines)[-3000:]
    (json_file,) = tmp_path.glob("*.json")
    report, markdown = _read(json_file)
    assert report["preflight"]["status"] == "ok"
    assert report["correctness"]["status"] == "interrupted" and report["correctness"]["kernel_checks"]
    assert {report[name]["status"] for name in report["sections"][2:]} == {"skipped"}
    assert "**interrupted**" in markdown and "stopped (hard time limit)" in markdown


@pytest.mark.slow
def test_onnx_agreement_study_on_a_finished_run(tmp_path):
    for module in ("onnx", "onnxscript", "onnxruntime"):
        require_optional(module, "pip install -e '.[deploy]'")
    import sdbnn
    from sdbnn.engine.config import TrainConfig

    run = tmp_path / "run"  # an untrained model stands in for a trained one: the bookkeeping is what is checked
    TrainConfig(model="resnet20", dataset="digits", epochs=1, max_images=48, output_dir=str(run)).save(
        run / "config.yaml")
    sdbnn.save_weights(sdbnn.create_model("resnet20"), run / "model.safetensors")
    (run / "summary.json").write_text(json.dumps({"final": {"val_top1": 0.1}, "best": {"val_top1": 0.2}}))
    command = [sys.executable, "-m", "studies.onnx_agreement", "--run", str(run), "--out", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=cpu_env(), cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    (json_file,) = (tmp_path / "out").glob("onnx-agreement-digits-1ep-*.json")
    report, markdown = _read(json_file)
    assert report["run"]["best_top1"] == 0.2 and report["environment"]["commit"]
    assert report["command"].startswith("python -m studies.onnx_agreement --run")
    for key in ("optimizations_off", "optimizations_on"):
        check = report[key]
        assert check["images"] == 48 and 0 < check["decided_images"] <= 48 and check["top1_agreement"] <= 48
    assert report["optimizations_off"]["passed"] and not report["optimizations_off"]["onnxruntime_graph_optimizations"]
    assert "| off (sdbnn's check) | 48 |" in markdown
