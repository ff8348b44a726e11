"""`python -m benchmarks.gpu_session`: the stages in priority order through `benchmarks.common.run_sections`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from benchmarks import common, gpu_session
from benchmarks.gpu_session import stages, targets
from benchmarks.gpu_session.plan import GPU_PLAN, TINY_PLAN, Session

# priority order: what the README's claims need most runs first
STAGES = {stage.name: stage for stage in (stages.PREFLIGHT, stages.CORRECTNESS, stages.FUSED_OPS, stages.TRAINING,
                                          stages.TRAINER, targets.TARGETS)}


def main(argv: list[str] | None = None) -> int:
    prog = "python -m benchmarks.gpu_session"
    out = Path(os.environ.get("OUT") or Path(__file__).resolve().parents[2] / "benchmarks" / "results")
    parser = common.parser(prog, gpu_session.__doc__, list(STAGES), out)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU run the test suite does)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type != "cuda" and not args.tiny:
        print("no CUDA device: the full session needs a GPU; run with --tiny for the CPU smoke run", file=sys.stderr)
        return 2
    plan = TINY_PLAN if args.tiny else GPU_PLAN
    budgets = common.budgets(parser, args, {name: stage.budget(plan) for name, stage in STAGES.items()})
    names = [name for name in STAGES if name in args.only]
    total_s = sum(budgets[name] for name in names) if args.total_s is None else args.total_s
    # Models of one class share their forward's code object, so each variant and train/eval mode adds an entry there.
    for name in ("recompile_limit", "cache_size_limit"):  # the name differs between torch versions
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 32))
            break

    report = common.start_report(args.out, "tiny" if args.tiny else "", "GPU session", device, prog, argv,
                                 tiny=args.tiny, total_budget_s=total_s, stage_budgets_s=budgets,
                                 compile_backend=plan.compile_backend)
    report.notes[0] += f" Total budget {total_s:.0f} s."
    if args.tiny:
        report.notes.append(f"CPU tiny run: compiled paths use the {plan.compile_backend} backend and the Trainer runs "
                            "without compile; it checks that every stage runs, not speed.")
    common.log(f"GPU session on {report.result['device']}, total budget {total_s:.0f} s, results in "
               f"{args.out / report.stem}.json/.md")
    session = Session(plan, device, report)
    sections = {name: (STAGES[name].title, lambda section, stage=STAGES[name]: stage.run(section, session),
                       STAGES[name].table) for name in names}
    return common.run_sections(report, sections, budgets, total_s, args.inject_failure)


if __name__ == "__main__":
    sys.exit(main())
