"""`python -m benchmarks.gpu_session`: the stages in order, each under its budget (see the package docstring)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import signal
import sys
from pathlib import Path

import torch

from benchmarks import gpu_session
from benchmarks.common import Budget, Interrupted, Report, device_name, device_slug, environment, log
from benchmarks.gpu_session import (correctness, fused_ops, gpu_tests, predictions, preflight, targets, trainer,
                                    training_step)
from benchmarks.gpu_session.plan import GPU_PLAN, TINY_PLAN, Session

# priority order: what the README's claims need most runs first
STAGES = {stage.name: stage for stage in (preflight.STAGE, correctness.STAGE, fused_ops.STAGE, training_step.STAGE,
                                          trainer.STAGE, predictions.STAGE, gpu_tests.STAGE, targets.STAGE)}
ROOT = Path(__file__).resolve().parents[2]


class InjectedFailure(RuntimeError):
    """Raised by --inject-failure: tests prove that a failing stage leaves the others' results."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_session", description=gpu_session.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU run the test suite does)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "benchmarks" / "results"),
                        help="folder for the JSON, markdown and log (default: $OUT, else benchmarks/results)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", nargs="+", choices=list(STAGES), help="run these stages (default: all)")
    parser.add_argument("--compile-backend", help="torch.compile backend for the models and the compiled reference "
                                                  "(default: inductor; aot_eager with --tiny)")
    parser.add_argument("--total-s", type=float,
                        help="budget of the whole session in seconds (default: the sum of the stages' budgets)")
    parser.add_argument("--budget", action="append", default=[], metavar="STAGE=SECONDS",
                        help="a stage's own budget (repeatable), e.g. training=240 or gpu_tests=300")
    parser.add_argument("--inject-failure", action="append", default=[], choices=list(STAGES),
                        help="make this stage raise at its start (tests the failure path)")
    args = parser.parse_args(argv)
    for item in args.budget:
        name, _, seconds = item.partition("=")
        if name not in STAGES or not seconds:
            parser.error(f"--budget takes STAGE=SECONDS with STAGE one of {', '.join(STAGES)}, got {item!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type != "cuda" and not args.tiny:
        print("no CUDA device: the full session needs a GPU; run with --tiny for the CPU smoke run", file=sys.stderr)
        return 2
    plan = TINY_PLAN if args.tiny else GPU_PLAN
    if args.compile_backend:
        plan = dataclasses.replace(plan, compile_backend=args.compile_backend)
    budgets = {**{name: stage.budget(plan) for name, stage in STAGES.items()},
               **{name: float(seconds) for name, _, seconds in (item.partition("=") for item in args.budget)}}
    stages = [name for name in STAGES if (args.only is None or name in args.only)]
    total_s = sum(budgets[name] for name in stages) if args.total_s is None else args.total_s
    # Models of one class share their forward's code object, so each variant and train/eval mode adds an entry there.
    for name in ("recompile_limit", "cache_size_limit"):  # the name differs between torch versions
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 32))
            break

    try:
        where = environment(device)
    except Exception as error:  # noqa: BLE001 - a broken tree still gets its files; preflight says what broke
        where = {"device": device_name(device), "date": datetime.date.today().isoformat(), "torch": torch.__version__,
                 "triton": None, "fused_path": f"unknown ({type(error).__name__}: {error})"}
    info = {**where, "tiny": args.tiny, "total_budget_s": total_s, "stage_budgets_s": budgets,
            "compile_backend": plan.compile_backend,
            "command": " ".join(["python -m benchmarks.gpu_session", *(sys.argv[1:] if argv is None else argv)])}
    stem = ("tiny-" if args.tiny else "") + f"{device_slug(info['device'])}-{info['date']}"
    notes = [f"`{info['command']}`; torch {info['torch']}, triton {info['triton']}, fused path: {info['fused_path']}; "
             f"total budget {total_s:.0f} s."]
    if args.tiny:
        notes.append(f"CPU tiny run: compiled paths use the {plan.compile_backend} backend and the Trainer runs "
                     "without compile; it checks that every stage runs, not speed.")
    report = Report(args.out, stem, info, f"GPU session — {info['device']} — {info['date']}", notes)
    session = Session(plan, device, report)
    log(f"GPU session on {info['device']} ({'tiny' if args.tiny else 'full'}), total budget {total_s:.0f} s, "
        f"results in {args.out / stem}.json/.md")

    def interrupt(signum, frame):
        raise Interrupted(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    total = Budget(total_s)
    try:
        for index, name in enumerate(stages):
            if budgets[name] <= 0:
                report.skip_rest([name], f"not requested (--budget {name}=SECONDS runs it)")
                continue
            reserved_later = sum(budgets[later] for later in stages[index + 1:])
            allowance = min(total.remaining(), max(budgets[name], total.remaining() - reserved_later))
            stage = STAGES[name]

            def body(section, stage=stage):
                if stage.name in args.inject_failure:
                    raise InjectedFailure(f"--inject-failure {stage.name}")
                return stage.run(section, session)

            report.run(name, body, stage.table, total.child(allowance), stage.title)
    except Interrupted:
        report.skip_rest(stages, "the session was stopped (hard time limit) before it started")
        log("interrupted: results so far are written")
        return 1
    return report.finish("stages")


if __name__ == "__main__":
    sys.exit(main())
