"""Accuracy counting and the metrics files a run writes."""

import csv
import json

import torch

from sdbnn.engine.metrics import MetricsLog, topk_correct


def test_topk_correct():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.05, 0.15], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 2, 0])
    assert {k: v.item() for k, v in topk_correct(logits, labels, ks=(1, 2, 5)).items()} == {1: 1, 2: 2, 5: 3}  # k capped at 3 classes


def test_metrics_files_and_curve(tmp_path):
    log = MetricsLog(tmp_path)
    for epoch in range(3):
        log.append({"epoch": epoch, "train_loss": 2.0 - epoch / 2, "val_loss": 2.1 - epoch / 2,
                    "val_top1": 0.3 + epoch / 10, "val_top5": 0.8, "lr": 0.1})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2]
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert len(rows) == 3 and float(rows[2]["val_top1"]) == 0.5
    assert MetricsLog.load(tmp_path).records == log.records  # a resumed run continues the same files
    png = log.plot(title="resnet20")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
