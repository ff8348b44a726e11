"""Where a benchmark ran, how results are written (atomically), and the runner of `python -m benchmarks` and the GPU
session: a `Report` rewritten as sections progress (a killed run keeps what finished) and a `Budget` per section."""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from sdbnn.io import atomic_write

_STARTED = time.perf_counter()


def log(message: str) -> None:
    """A progress line with the seconds since the process started (what a GPU session's log is read by)."""
    print(f"[{time.perf_counter() - _STARTED:7.1f}s] {message}", flush=True)


def rate_text(value: float | None) -> str:
    """A rate for a table or log line: thousands separated from 100 up, three digits below, "—" when missing."""
    return "—" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def device_name(device: torch.device) -> str:
    return (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)")


def environment(device: torch.device) -> dict:
    """Where a benchmark ran: device, date, versions, fused path, and `sdbnn.provenance`'s commit, CPU and libraries."""
    from sdbnn import ops, provenance

    fused_path = {"triton": "triton", "cpu": "CPU math (no Triton kernels on this device)"}[
        ops.implementation(torch.empty(1, device=device))]
    return {"device": device_name(device), "date": datetime.date.today().isoformat(), "torch": torch.__version__,
            "triton": getattr(sys.modules.get("triton"), "__version__", None), "python": platform.python_version(),
            "cpu_cores": os.cpu_count(), "fused_path": fused_path, "environment": provenance.environment()}


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a timer around CUDA work measures nothing without it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]) + "\n"


def result_stem(prefix: str, result: dict) -> str:
    """``<prefix>-<device>-<date>`` (prefix "" names it by device and date only)."""
    device = re.sub(r"[^a-z0-9]+", "-", result["device"].lower()).strip("-")
    return "-".join(part for part in (prefix, device, result["date"]) if part)


def write_named_results(out: Path, stem: str, result: dict, markdown: str) -> Path:
    atomic_write(out / f"{stem}.json", lambda tmp: tmp.write_text(json.dumps(result, indent=2, default=str) + "\n"))
    atomic_write(out / f"{stem}.md", lambda tmp: tmp.write_text(markdown))
    return out / f"{stem}.json"


def interleaved_rounds(measure: Callable[[str, int], dict], names: Sequence[str], rounds: int) -> dict[str, list]:
    """{name: [measure(name, round) for rounds from 0]}, back to back, every other round reversed: drift hits all."""
    per_round = {name: [] for name in names}
    for index in range(rounds):
        for name in names if index % 2 == 0 else list(reversed(names)):
            per_round[name].append(measure(name, index))
    return per_round


def median_ratio(per_round: dict[str, list[dict]], name: str, baseline: str, key: str) -> tuple[list[float], float]:
    """Per-round ``name`` ÷ ``baseline`` of ``key``, and their median (drift moves it less than a ratio of medians)."""
    ratios = [mine[key] / theirs[key] for mine, theirs in zip(per_round[name], per_round[baseline])]
    return ratios, statistics.median(ratios)


class Budget:
    """Seconds of wall clock that work may still start in (None: no limit); a child budget never outlives its parent."""

    def __init__(self, seconds: float | None = None, deadline: float = math.inf):
        self.seconds = seconds
        self.deadline = min(deadline, math.inf if seconds is None else time.perf_counter() + seconds)

    def remaining(self) -> float:
        return self.deadline - time.perf_counter()

    def allows(self, estimate_s: float = 0.0) -> bool:
        """Whether work expected to take ``estimate_s`` seconds can still start (and, as far as known, finish)."""
        return self.remaining() > max(estimate_s, 0.0)

    def child(self, seconds: float | None) -> Budget:
        return Budget(seconds, self.deadline)


class Interrupted(BaseException):
    """Raised into a running section when the process is told to stop (SIGTERM from a hard time limit)."""


class Section:
    """What a running section sees: its results dict (written out as it fills), its budget, its skips and errors."""

    def __init__(self, name: str, data: dict | None = None, budget: Budget | None = None,
                 save: Callable[[], None] | None = None):
        self.name, self.data, self.budget = name, {} if data is None else data, budget or Budget()
        self.save = save or (lambda: None)

    def skip(self, item: str, reason: str) -> None:
        self.data.setdefault("skipped", []).append(f"{item}: {reason}")
        log(f"{self.name}: skipped {item} ({reason})")

    def allows(self, item: str, estimate_s: float = 0.0) -> bool:
        """Whether ``item`` (expected to take ``estimate_s``) may start; records it as skipped when not."""
        if self.budget.allows(estimate_s):
            return True
        self.skip(item, f"time budget: {max(self.budget.remaining(), 0):.0f} s left, needs ~{estimate_s:.0f} s")
        return False

    def error(self, item: str, error: BaseException) -> None:
        self.data.setdefault("errors", []).append(
            {"item": item, "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()})
        log(f"{self.name}: {item} FAILED: {type(error).__name__}: {error}")
        self.save()


SECTION_STATUSES = {"ok": "ok", "incomplete": "incomplete (time budget: some items skipped)",
                    "errors": "**some items failed**", "failed": "**failed**", "skipped": "skipped",
                    "interrupted": "**interrupted** (killed while running)", "running": "running"}
FAILING_STATUSES = ("errors", "failed", "interrupted")


class Report:
    """Sections run in order, each guarded; the JSON and markdown are rewritten whenever anything changes."""

    def __init__(self, out: Path | None, stem: str, info: dict, title: str, notes: list[str] | None = None):
        self.out, self.stem, self.title, self.notes = out, stem, title, list(notes or [])
        self.result, self._markdown = {**info, "sections": []}, {}  # _markdown: name -> (title, table(data) or None)

    def run(self, name: str, fn: Callable[[Section], dict | None], markdown: Callable[[dict], str] | None = None,
            budget: Budget | None = None, title: str | None = None) -> dict:
        """Run ``fn(section)`` unless the budget is spent; an exception is recorded (an interruption re-raised)."""
        budget = budget or Budget()
        budget_s = None if budget.seconds is None else round(budget.seconds, 1)
        if not budget.allows():
            log(f"== {name}: skipped (time budget spent)")
            return self.skip(name, "time budget spent before it started", title, budget_s=budget_s)
        log(f"== {name} (budget {'none' if budget.seconds is None else f'{budget.remaining():.0f} s'})")
        data = self._add(name, {"status": "running", "budget_s": budget_s}, title, markdown)
        started = time.perf_counter()
        try:
            data.update(fn(Section(name, data, budget, self.write)) or {})  # a body may return its results instead
            data["status"] = "errors" if data.get("errors") else "incomplete" if data.get("skipped") else "ok"
        except Exception as error:  # noqa: BLE001 - a failing section is recorded and the run goes on
            data.update(status="failed", error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc())
            log(f"{name} FAILED: {type(error).__name__}: {error}")
        except Interrupted:
            data.update(status="interrupted")
            raise
        finally:
            data["seconds"] = round(time.perf_counter() - started, 2)
            self.write()
            log(f"== {name}: {data['status']} in {data['seconds']:.1f} s")
        return data

    def _add(self, name: str, data: dict, title: str | None, markdown: Callable | None = None) -> dict:
        self.result[name] = data
        self.result["sections"].append(name)
        self._markdown[name] = (title or name.capitalize(), markdown)
        self.write()
        return data

    def skip(self, name: str, reason: str, title: str | None = None, **extra) -> dict:
        return self._add(name, {"status": "skipped", "reason": reason, "seconds": 0.0, **extra}, title)

    def failed(self) -> list[str]:
        return [name for name in self.result["sections"] if self.result[name]["status"] in FAILING_STATUSES]

    def markdown(self) -> str:
        lines = [f"# {self.title}", ""] + [line for note in self.notes for line in (note, "")]
        rows = [[name, SECTION_STATUSES[data["status"]], f"{data.get('seconds', 0):.1f}",
                 "—" if data.get("budget_s") is None else f"{data['budget_s']:.0f}"]
                for name, data in ((name, self.result[name]) for name in self.result["sections"])]
        lines += [table(["section", "status", "seconds", "budget s"], rows)]
        for name in self.result["sections"]:
            data, (title, markdown) = self.result[name], self._markdown[name]
            lines += [f"## {title}", "", f"Status: {SECTION_STATUSES[data['status']]}"
                      + (f" — {data['reason']}" if data.get("reason") else "") + ".", ""]
            if data.get("note"):  # what a CPU or tiny run's numbers mean
                lines += [f"{data['note']}.", ""]
            if markdown is not None and data["status"] != "skipped":
                try:
                    lines.append(markdown(data))
                except Exception as error:  # noqa: BLE001 - partial results may not fill the table
                    lines.append(f"(no table: {type(error).__name__}: {error})\n")
            if data.get("skipped"):
                lines += ["Skipped (time budget):", "", *[f"- {item}" for item in data["skipped"]], ""]
            for failure in data.get("errors", []):
                lines += [f"Failed: {failure['item']} — {failure['error']}", "", "```", failure["traceback"].rstrip(),
                          "```", ""]
            if data["status"] == "failed":
                lines += ["```", data["traceback"].rstrip(), "```", ""]
            lines.append("")
        return "\n".join(lines).rstrip() + "\n"

    def write(self) -> None:
        if self.out is not None:
            write_named_results(self.out, self.stem, self.result, self.markdown())


def parser(prog: str, doc: str, names: Sequence[str], out: Path) -> argparse.ArgumentParser:
    """The options of every run of sections; a preset adds its own."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=out, help=f"folder for the JSON and markdown (default: {out})")
    parser.add_argument("--only", nargs="+", choices=names, default=list(names), help="run these (default: all)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--budget-s", "--total-s", dest="total_s", type=float, metavar="SECONDS",
                        help="start no new work after SECONDS (default: the sum of the sections' budgets, or none)")
    parser.add_argument("--budget", action="append", default=[], metavar="NAME=SECONDS",
                        help="a section's own budget (repeatable), e.g. training=240")
    parser.add_argument("--inject-failure", action="append", default=[], choices=names,
                        help="make this section raise at its start (tests the failure path)")
    return parser


def budgets(parser: argparse.ArgumentParser, args: argparse.Namespace, defaults: dict) -> dict:
    """Each section's own seconds: --budget NAME=SECONDS over ``defaults`` (None: none; 0: runs only when given one)."""
    given = {}
    for item in args.budget:
        name, _, seconds = item.partition("=")
        if name not in defaults or not seconds:
            parser.error(f"--budget takes NAME=SECONDS with NAME one of {', '.join(defaults)}, got {item!r}")
        given[name] = float(seconds)
    return {**defaults, **given}


def start_report(out: Path, prefix: str, title: str, device: torch.device, prog: str, argv: list[str] | None,
                 **extra) -> Report:
    """A run's report, ``<prefix>-<device>-<date>``: where it ran (or what broke `environment`), ``extra``, command."""
    try:
        where = environment(device)
    except Exception as error:  # noqa: BLE001
        where = {"device": device_name(device), "date": datetime.date.today().isoformat(), "torch": torch.__version__,
                 "triton": None, "fused_path": f"unknown ({type(error).__name__}: {error})"}
    info = {**where, **extra, "command": " ".join([prog, *(sys.argv[1:] if argv is None else argv)])}
    note = f"`{info['command']}`; torch {info['torch']}, triton {info['triton']}, fused path: {info['fused_path']}."
    return Report(out, result_stem(prefix, info), info, f"{title} — {info['device']} — {info['date']}", [note])


def _injected_failure(section: Section) -> None:
    raise RuntimeError(f"--inject-failure {section.name}")  # what tests use to show a failure leaves the rest


def run_sections(report: Report, sections: dict[str, tuple], budgets: dict, total_s: float | None,
                 inject_failure: Sequence[str] = ()) -> int:
    """Run ``sections`` ({name: (title, body(section), table(data))}) in ``total_s`` seconds (None: no limit); each may
    use its own budget and what earlier ones left, not what later ones reserve. Exit status: 1 if one failed."""
    def interrupt(signum, frame):  # SIGTERM, from a hard time limit
        raise Interrupted(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    names, total = list(sections), Budget(total_s)
    try:
        for index, name in enumerate(names):
            title, body, markdown = sections[name]
            if budgets[name] is not None and budgets[name] <= 0:
                report.skip(name, f"not requested (--budget {name}=SECONDS runs it)", title)
                continue
            reserved_later = sum(budgets[later] or 0 for later in names[index + 1:])
            allowance = min(total.remaining(), max(budgets[name] or 0, total.remaining() - reserved_later))
            budget = total.child(None if math.isinf(allowance) else allowance)
            report.run(name, _injected_failure if name in inject_failure else body, markdown, budget, title)
    except Interrupted:
        for name in [name for name in names if name not in report.result]:
            report.skip(name, "the run was stopped (hard time limit) before it started", sections[name][0])
        log("interrupted: results so far are written")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    log(f"wrote {report.out / report.stem}.json and .md" if report.out else "done")
    if report.failed():
        log(f"failed: {', '.join(report.failed())}")
    return 1 if report.failed() else 0
