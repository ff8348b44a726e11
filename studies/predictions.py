"""How far the CUDA-graph study's predictions (`studies.cuda_graph`, made without a GPU) are from a GPU session's
measured training steps.

    python -m studies.predictions benchmarks/results/<gpu-session>.json      # after a lent GPU's session

Each training-stage row of the session whose model and variant were predicted (bf16, sm_90): the measured step
(batch ÷ images/s) against the predicted one. Writes ``predictions-<session file's stem>.{json,md}`` to ``--out``
(default ``studies/results/cuda-graph``). The session measures; this study owns the comparison with its predictions.
"""

import argparse
import json
import sys
from pathlib import Path

from benchmarks.common import table, write_named_results
from studies.common import RESULTS

PREDICTIONS = RESULTS / "cuda-graph"
# training-stage variant -> the predicted ms of its step, from a cuda-graph row
PREDICTED = {"sdbnn": lambda row: row["predicted_step_ms"], "full_precision": lambda row: row["fp_twin"]["time_ms"],
             "reference_fp32": lambda row: row["eager_reference_fp32"]["time_ms"]}


def predicted_rows(folder: Path = PREDICTIONS) -> tuple[list[str], dict]:
    """(files read, {model: its bf16 sm_90 row}); sorted by stem, a follow-up named after its run
    (``cuda-graph-DATE-traced-backward``) comes after it and its rows replace the run's."""
    files = sorted(folder.glob("cuda-graph-*.json"), key=lambda path: path.stem)
    rows = {row["model"]: row for path in files for row in json.loads(path.read_text())["rows"]
            if row.get("precision") == "bf16" and row.get("arch") == "sm_90" and "error" not in row}
    return [path.name for path in files], rows


def compare(session: dict, predicted: dict) -> list[dict]:
    """One row per measured training step that has a prediction."""
    rows = []
    for measured in session.get("training", {}).get("rows", []):
        row = predicted.get(measured["model"])
        if row is None or measured["variant"] not in PREDICTED or not measured.get("train_images_per_s"):
            continue
        measured_ms = 1e3 * measured["batch"] / measured["train_images_per_s"]
        predicted_ms = PREDICTED[measured["variant"]](row)
        rows.append({"model": measured["model"], "variant": measured["variant"], "batch": measured["batch"],
                     "predicted_batch": row["batch"], "measured_ms": measured_ms, "predicted_ms": predicted_ms,
                     "measured_over_predicted": measured_ms / predicted_ms})
    return rows


def markdown(result: dict) -> str:
    header = ["model", "variant", "batch (predicted at)", "measured ms", "predicted ms", "measured ÷ predicted"]
    rows = [[row["model"], row["variant"], f"{row['batch']} ({row['predicted_batch']})", f"{row['measured_ms']:.3f}",
             f"{row['predicted_ms']:.3f}", f"{row['measured_over_predicted']:.2f}"] for row in result["rows"]]
    return (f"# Predicted vs measured training steps\n\nMeasured: `{result['session']}` ({result['device']}). "
            f"Predicted (H100): {', '.join(result['predictions']) or 'no prediction file'}.\n\n" + table(header, rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studies.predictions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("session", type=Path, help="a GPU session's result JSON")
    parser.add_argument("--predictions", type=Path, default=PREDICTIONS, help="folder of cuda-graph result files")
    parser.add_argument("--out", type=Path, default=PREDICTIONS)
    args = parser.parse_args(argv)
    if not args.session.is_file():
        parser.error(f"no GPU session result at {args.session}")
    session = json.loads(args.session.read_text())
    files, predicted = predicted_rows(args.predictions)
    result = {"session": str(args.session), "device": session.get("device"), "predictions": files,
              "rows": compare(session, predicted)}
    print(markdown(result))
    path = write_named_results(args.out, f"predictions-{args.session.stem}", result, markdown(result))
    print(f"wrote {path} and .md")
    return 0 if result["rows"] else 1


if __name__ == "__main__":
    sys.exit(main())
