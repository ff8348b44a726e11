"""What every benchmark records about where it ran, how its time is budgeted, and how results are written.

A `Report` is one JSON + markdown pair for a run of several sections. It is rewritten (atomically) when a section
starts, reports progress and ends, so a run that fails, runs out of time or is killed keeps everything finished
before. A section that raises is recorded with its traceback and the next section still runs; a `Budget` stops
*starting* new work when time runs out (it never interrupts what is running), and what was skipped is written down.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import re
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


def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_results(out: Path, prefix: str, result: dict, markdown: str) -> Path:
    """``<out>/<prefix>-<device>-<date>.json`` and ``.md`` (prefix "" names the file by device and date only)."""
    return write_named_results(out, result_stem(prefix, result), result, markdown)


def write_named_results(out: Path, stem: str, result: dict, markdown: str) -> Path:
    """``<out>/<stem>.json`` and ``<out>/<stem>.md``, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(out / f"{stem}.json", json.dumps(result, indent=2, default=str) + "\n")
    _atomic_write_text(out / f"{stem}.md", markdown)
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
    """Seconds of wall clock that work may still start in; a child budget never outlives its parent."""

    def __init__(self, seconds: float | None = None, parent: Budget | None = None):
        self.seconds, self.parent, self.started = seconds, parent, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def remaining(self) -> float:
        own = math.inf if self.seconds is None else self.seconds - self.elapsed()
        return own if self.parent is None else min(own, self.parent.remaining())

    def allows(self, estimate_s: float = 0.0) -> bool:
        """Whether work expected to take ``estimate_s`` seconds can still start (and, as far as known, finish)."""
        return self.remaining() > max(estimate_s, 0.0)

    def child(self, seconds: float | None) -> Budget:
        return Budget(seconds, parent=self)


class Interrupted(BaseException):
    """Raised into a running section when the process is told to stop (SIGTERM from a hard time limit)."""


class Section:
    """What a running section sees: the dict its results go into (written out as it fills), its budget, and where
    skipped and failed items are recorded."""

    def __init__(self, name: str, data: dict | None = None, budget: Budget | None = None,
                 save: Callable[[], None] | None = None):
        self.name = name
        self.data = {} if data is None else data
        self.budget = budget or Budget()
        self._save = save

    def save(self) -> None:
        if self._save is not None:
            self._save()

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

    @property
    def json_path(self) -> Path | None:
        return None if self.out is None else self.out / f"{self.stem}.json"

    def run(self, name: str, fn: Callable[[Section], dict | None], markdown: Callable[[dict], str] | None = None,
            budget: Budget | None = None, title: str | None = None) -> dict:
        """Run ``fn(section)`` unless the budget is spent; a raised exception is recorded, never propagated (except
        an interruption, after the files are written)."""
        budget = budget or Budget()
        data = {"status": "running", "budget_s": None if budget.seconds is None else round(budget.seconds, 1)}
        self.result[name] = data
        self.result["sections"].append(name)
        self._markdown[name] = (title or name.capitalize(), markdown)
        if not budget.allows():
            data.update(status="skipped", reason="time budget spent before it started", seconds=0.0)
            log(f"== {name}: skipped (time budget spent)")
            self.write()
            return data
        log(f"== {name} (budget {'none' if budget.seconds is None else f'{budget.remaining():.0f} s'})")
        section = Section(name, data, budget, self.write)
        self.write()
        started = time.perf_counter()
        try:
            returned = fn(section)
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

    def skip_rest(self, names: list[str], reason: str) -> None:
        for name in names:
            if name not in self.result:
                self.result[name] = {"status": "skipped", "reason": reason, "seconds": 0.0}
                self.result["sections"].append(name)
                self._markdown[name] = (name.capitalize(), None)
        self.write()

    def failed(self) -> list[str]:
        return [name for name in self.result["sections"] if self.result[name]["status"] in FAILING_STATUSES]

    def finish(self, kind: str = "sections") -> int:
        """Say where the results are and which parts failed; the exit status (1 when any part failed)."""
        log(f"wrote {self.json_path} and .md")
        failed = self.failed()
        if failed:
            log(f"failed {kind}: {', '.join(failed)}")
        return 1 if failed else 0

    def markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        for note in self.notes:
            lines += [note, ""]
        lines += ["| section | status | seconds | budget s |", "|---|---|---|---|"]
        for name in self.result["sections"]:
            data = self.result[name]
            budget = "—" if data.get("budget_s") is None else f"{data['budget_s']:.0f}"
            lines.append(f"| {name} | {SECTION_STATUSES[data['status']]} | {data.get('seconds', 0):.1f} | {budget} |")
        lines.append("")
        for name in self.result["sections"]:
            lines.append(self._section_markdown(name))
        return "\n".join(lines).rstrip() + "\n"

    def _section_markdown(self, name: str) -> str:
        data = self.result[name]
        title, table = self._markdown.get(name, (name.capitalize(), None))
        lines = [f"## {title}", "", f"Status: {SECTION_STATUSES[data['status']]}"
                 + (f" — {data['reason']}" if data.get("reason") else "") + ".", ""]
        if table is not None and data["status"] not in ("skipped",):
            try:
                lines.append(table(data))
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
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(self.out / f"{self.stem}.json", json.dumps(self.result, indent=2, default=str) + "\n")
        _atomic_write_text(self.out / f"{self.stem}.md", self.markdown())
