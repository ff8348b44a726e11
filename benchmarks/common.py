"""What every benchmark records about where it ran, how its time is budgeted and how results are written, and the one
runner of a run of sections: `python -m benchmarks` and the GPU session (`python -m benchmarks.gpu_session`) are its
two presets.

A `Report` is one JSON + markdown pair for a run of several sections. It is rewritten (atomically) when a section
starts, reports progress and ends, so a run that fails, runs out of time or is killed keeps everything finished
before. A section that raises is recorded with its traceback and the next section still runs; a `Budget` stops
*starting* new work when time runs out (it never interrupts what is running), and what was skipped is written down.
"""

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
    if value is None:
        return "—"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def device_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def environment(device: torch.device) -> dict:
    """Where a benchmark ran: device, date, versions, the fused path, and ``environment`` — the commit, CPU model,
    cores, threads and libraries (`sdbnn.provenance`), as every run's summary.json records them."""
    import sdbnn.ops
    from sdbnn import provenance

    triton = sys.modules.get("triton")
    probe = torch.empty(1, device=device)
    return {
        "device": device_name(device),
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "triton": getattr(triton, "__version__", None),
        "python": platform.python_version(),
        "cpu_cores": os.cpu_count(),
        "fused_path": {"triton": "triton", "cpu": "CPU math (no Triton kernels on this device)"}[sdbnn.ops.implementation(probe)],
        "environment": provenance.environment(),
    }


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a timer around CUDA work measures nothing without it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A markdown table, each cell as given."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]) + "\n"


def write_results(out: Path, prefix: str, result: dict, markdown: str) -> Path:
    """``<out>/<prefix>-<device>-<date>.json`` and ``.md`` (prefix "" names the file by device and date only)."""
    return write_named_results(out, result_stem(prefix, result), result, markdown)


def write_named_results(out: Path, stem: str, result: dict, markdown: str) -> Path:
    """``<out>/<stem>.json`` and ``<out>/<stem>.md``, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / f"{stem}.json", lambda tmp: tmp.write_text(json.dumps(result, indent=2, default=str) + "\n"))
    atomic_write(out / f"{stem}.md", lambda tmp: tmp.write_text(markdown))
    return out / f"{stem}.json"


def interleaved_rounds(measure: Callable[[str, int], dict], names: Sequence[str], rounds: int) -> dict[str, list]:
    """{name: [measure(name, round) for each round]}: every round measures each name once, back to back, the order
    reversed every other round, so that a machine's drifting load falls on all of them alike. Rounds count from 0."""
    per_round = {name: [] for name in names}
    for index in range(rounds):
        for name in names if index % 2 == 0 else list(reversed(names)):
            per_round[name].append(measure(name, index))
    return per_round


def median_ratio(per_round: dict[str, list[dict]], name: str, baseline: str, key: str) -> tuple[list[float], float]:
    """Each round's ``name`` ÷ ``baseline`` of ``key`` (paired: measured back to back) and the median of those: the
    headline of an interleaved comparison, which drift between rounds moves less than a ratio of medians."""
    ratios = [mine[key] / theirs[key] for mine, theirs in zip(per_round[name], per_round[baseline])]
    return ratios, statistics.median(ratios)


def result_stem(prefix: str, result: dict) -> str:
    return "-".join(part for part in (prefix, device_slug(result["device"]), result["date"]) if part)


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


class InjectedFailure(RuntimeError):
    """Raised by --inject-failure: tests prove that a failing section leaves the others' results."""


class Section:
    """What a running section sees: the dict its results go into (written out as it fills), its budget, and where
    skipped and failed items are recorded."""

    def __init__(self, name: str, data: dict | None = None, budget: Budget | None = None,
                 save: Callable[[], None] | None = None):
        self.name = name
        self.data = {} if data is None else data
        self.budget = budget or Budget()
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
        """Record an item that failed; the section goes on with the next one."""
        self.data.setdefault("errors", []).append(
            {"item": item, "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()})
        log(f"{self.name}: {item} FAILED: {type(error).__name__}: {error}")
        self.save()


SECTION_STATUSES = {
    "ok": "ok",
    "incomplete": "incomplete (time budget: some items skipped)",
    "errors": "**some items failed**",
    "failed": "**failed**",
    "skipped": "skipped",
    "interrupted": "**interrupted** (killed while running)",
    "running": "running",
}
FAILING_STATUSES = ("errors", "failed", "interrupted")


class Report:
    """Sections run in order, each guarded; the JSON and markdown are rewritten whenever anything changes."""

    def __init__(self, out: Path | None, stem: str, info: dict, title: str, notes: list[str] | None = None):
        self.out, self.stem, self.title = out, stem, title
        self.notes = list(notes or [])
        self.result = {**info, "sections": []}
        self._markdown: dict[str, tuple[str, Callable[[dict], str] | None]] = {}

    def run(self, name: str, fn: Callable[[Section], dict | None], markdown: Callable[[dict], str] | None = None,
            budget: Budget | None = None, title: str | None = None) -> dict:
        """Run ``fn(section)`` unless the budget is spent; a raised exception is recorded, never propagated (except
        an interruption, after the files are written)."""
        budget = budget or Budget()
        data = self._add(name, {"status": "running", "budget_s": None if budget.seconds is None
                                else round(budget.seconds, 1)}, title, markdown)
        if not budget.allows():
            data.update(status="skipped", reason="time budget spent before it started", seconds=0.0)
            log(f"== {name}: skipped (time budget spent)")
            self.write()
            return data
        log(f"== {name} (budget {'none' if budget.seconds is None else f'{budget.remaining():.0f} s'})")
        self.write()
        started = time.perf_counter()
        try:
            returned = fn(Section(name, data, budget, self.write))
            if returned is not None and returned is not data:
                data.update(returned)
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

    def _add(self, name: str, data: dict, title: str | None, markdown: Callable[[dict], str] | None) -> dict:
        self.result[name] = data
        self.result["sections"].append(name)
        self._markdown[name] = (title or name.capitalize(), markdown)
        return data

    def skip(self, name: str, reason: str, title: str | None = None) -> None:
        """Record a section that did not run as skipped for ``reason``."""
        self._add(name, {"status": "skipped", "reason": reason, "seconds": 0.0}, title, None)
        self.write()

    def failed(self) -> list[str]:
        return [name for name in self.result["sections"] if self.result[name]["status"] in FAILING_STATUSES]

    def markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        for note in self.notes:
            lines += [note, ""]
        rows = [[name, SECTION_STATUSES[data["status"]], f"{data.get('seconds', 0):.1f}",
                 "—" if data.get("budget_s") is None else f"{data['budget_s']:.0f}"]
                for name, data in ((name, self.result[name]) for name in self.result["sections"])]
        lines.append(table(["section", "status", "seconds", "budget s"], rows))
        return "\n".join(lines + [self._section_markdown(name) for name in self.result["sections"]]).rstrip() + "\n"

    def _section_markdown(self, name: str) -> str:
        data = self.result[name]
        title, markdown = self._markdown[name]
        lines = [f"## {title}", "", f"Status: {SECTION_STATUSES[data['status']]}"
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
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        if self.out is not None:
            write_named_results(self.out, self.stem, self.result, self.markdown())


# --- the runner of both presets ------------------------------------------------------------------------------------

def parser(prog: str, doc: str, names: Sequence[str], out: Path) -> argparse.ArgumentParser:
    """The options of every run of sections; a preset adds its own."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=out, help=f"folder for the JSON and markdown (default: {out})")
    parser.add_argument("--only", nargs="+", choices=names, default=list(names), help="run these (default: all)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--budget-s", "--total-s", dest="total_s", type=float, metavar="SECONDS",
                        help="start no new work after this many seconds (default: the sum of the sections' own "
                             "budgets, or no limit)")
    parser.add_argument("--budget", action="append", default=[], metavar="NAME=SECONDS",
                        help="a section's own budget (repeatable), e.g. training=240 or gpu_tests=300")
    parser.add_argument("--inject-failure", action="append", default=[], choices=names,
                        help="make this section raise at its start (tests the failure path)")
    return parser


def budgets(parser: argparse.ArgumentParser, args: argparse.Namespace, defaults: dict) -> dict:
    """Each section's own budget in seconds: ``defaults`` (None: none of its own; 0: runs only when given one) with
    --budget NAME=SECONDS over them."""
    given = {}
    for item in args.budget:
        name, _, seconds = item.partition("=")
        if name not in defaults or not seconds:
            parser.error(f"--budget takes NAME=SECONDS with NAME one of {', '.join(defaults)}, got {item!r}")
        given[name] = float(seconds)
    return {**defaults, **given}


def start_report(out: Path, prefix: str, title: str, device: torch.device, prog: str, argv: list[str] | None,
                 **extra) -> Report:
    """A run's report, named ``<prefix>-<device>-<date>``: where it ran (a tree too broken for `environment` still
    gets its files, and the GPU session's preflight says what broke), ``extra``, and the command with the versions."""
    try:
        where = environment(device)
    except Exception as error:  # noqa: BLE001
        where = {"device": device_name(device), "date": datetime.date.today().isoformat(), "torch": torch.__version__,
                 "triton": None, "fused_path": f"unknown ({type(error).__name__}: {error})"}
    info = {**where, **extra, "command": " ".join([prog, *(sys.argv[1:] if argv is None else argv)])}
    note = f"`{info['command']}`; torch {info['torch']}, triton {info['triton']}, fused path: {info['fused_path']}."
    return Report(out, result_stem(prefix, info), info, f"{title} — {info['device']} — {info['date']}", [note])


def run_sections(report: Report, sections: dict[str, tuple], budgets: dict, total_s: float | None,
                 inject_failure: Sequence[str] = ()) -> int:
    """Run ``sections`` ({name: (title, body(section), table(data))}) in order, each guarded, within ``total_s``
    seconds (None: no limit). A section may use its own budget plus whatever earlier ones left, never what later
    ones reserve. SIGTERM (a hard time limit) marks the running section interrupted and the rest skipped; the files
    keep everything written before. The exit status: 1 when a section failed."""
    def interrupt(signum, frame):
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

            def guarded(section, name=name, body=body):
                if name in inject_failure:
                    raise InjectedFailure(f"--inject-failure {name}")
                return body(section)

            report.run(name, guarded, markdown, total.child(None if math.isinf(allowance) else allowance), title)
    except Interrupted:
        for name in names:
            if name not in report.result:
                report.skip(name, "the run was stopped (hard time limit) before it started", sections[name][0])
        log("interrupted: results so far are written")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    log(f"wrote {report.out / report.stem}.json and .md" if report.out else "done")
    if report.failed():
        log(f"failed: {', '.join(report.failed())}")
    return 1 if report.failed() else 0
