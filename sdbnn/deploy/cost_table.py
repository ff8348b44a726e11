"""The cost table BNN papers report: per-layer rows, totals, and how they print (a table, JSON-able dicts, Markdown).

`sdbnn.deploy.cost` fills these rows; the counting convention is described there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

BITS_PER_BINARY_PARAM = 1
BITS_PER_REAL_PARAM = 32
BOPS_PER_FLOP = 64  # a 64-bit word does 64 binary MACs in one XNOR + popcount (Bi-Real Net, ReActNet)


@dataclass
class LayerCost:
    """One module's share of the cost (per image). ``name`` is its qualified name ("" for the model itself)."""

    name: str
    kind: str
    output_shape: tuple[int, ...] = ()
    binary_params: int = 0
    real_params: int = 0
    training_only_params: int = 0
    bops: int = 0
    flops: int = 0
    elementwise_ops: int = 0
    asd_gate_flops: int = 0
    calls: int = 0

    @property
    def is_empty(self) -> bool:
        counts = (self.binary_params, self.real_params, self.training_only_params, self.bops, self.flops,
                  self.elementwise_ops)
        return not any(counts)


@dataclass
class ModelSummary:
    """Per-layer rows and totals. ``str(summary)`` (or `table`) prints them; `to_dict` gives JSON-able values."""

    model: str
    input_size: tuple[int, int, int]
    rows: list[LayerCost]
    twin: str | None = None
    twin_params: int | None = None
    twin_flops: int | None = None
    uncounted_ops: dict[str, int] = field(default_factory=dict)  # aten ops with no rule (should stay empty)

    def _total(self, column: str) -> int:
        return sum(getattr(row, column) for row in self.rows)

    @property
    def binary_params(self) -> int:
        return self._total("binary_params")

    @property
    def real_params(self) -> int:
        return self._total("real_params")

    @property
    def training_only_params(self) -> int:
        return self._total("training_only_params")

    @property
    def bops(self) -> int:
        return self._total("bops")

    @property
    def flops(self) -> int:
        return self._total("flops")

    @property
    def elementwise_ops(self) -> int:
        return self._total("elementwise_ops")

    @property
    def asd_gate_flops(self) -> int:
        return self._total("asd_gate_flops")

    @property
    def ops(self) -> float:
        return self.bops / BOPS_PER_FLOP + self.flops

    @property
    def size_bytes(self) -> float:
        return (self.binary_params * BITS_PER_BINARY_PARAM + self.real_params * BITS_PER_REAL_PARAM) / 8

    @property
    def twin_size_bytes(self) -> float | None:
        return None if self.twin_params is None else self.twin_params * BITS_PER_REAL_PARAM / 8

    @property
    def compression(self) -> float | None:
        """How many times smaller than the full-precision twin."""
        return None if self.twin_size_bytes is None else self.twin_size_bytes / self.size_bytes

    @property
    def speedup(self) -> float | None:
        """The twin's FLOPs over this model's OPs (the papers' "speed-up")."""
        return None if self.twin_flops is None else self.twin_flops / self.ops

    def totals(self) -> dict:
        """The totals as JSON-able numbers (what `model_cost` returns)."""
        return {
            "model": self.model,
            "input_size": list(self.input_size),
            "binary_params": self.binary_params,
            "real_params": self.real_params,
            "training_only_params": self.training_only_params,
            "bops": self.bops,
            "flops": self.flops,
            "ops": self.ops,
            "elementwise_ops": self.elementwise_ops,
            "asd_gate_flops": self.asd_gate_flops,
            "size_bytes": self.size_bytes,
            "twin": self.twin,
            "twin_params": self.twin_params,
            "twin_flops": self.twin_flops,
            "twin_size_bytes": self.twin_size_bytes,
            "compression": self.compression,
            "speedup": self.speedup,
        }

    def to_dict(self) -> dict:
        rows = [{**dataclasses.asdict(row), "output_shape": list(row.output_shape)} for row in self.rows]
        return {**self.totals(), "rows": rows, "uncounted_ops": dict(self.uncounted_ops)}

    def table(self, *, all_rows: bool = False) -> str:
        """A readable table (like larq.models.summary): one row per module that holds parameters or does work."""
        header = ("layer", "kind", "output", "binary params", "real params", "BOPs", "FLOPs", "elementwise")
        lines = []
        for row in self.rows:
            if row.is_empty and not all_rows:
                continue
            lines.append((row.name or "(model)", row.kind, "×".join(map(str, row.output_shape)),
                          f"{row.binary_params:,}", f"{row.real_params:,}",
                          f"{row.bops:,}", f"{row.flops:,}", f"{row.elementwise_ops:,}"))
        total = ("total", "", "", f"{self.binary_params:,}", f"{self.real_params:,}", f"{self.bops:,}",
                 f"{self.flops:,}", f"{self.elementwise_ops:,}")
        widths = [max(len(line[i]) for line in [header, total, *lines]) for i in range(len(header))]

        def render(cells):
            left = [cells[i].ljust(widths[i]) for i in range(3)]
            right = [cells[i].rjust(widths[i]) for i in range(3, len(cells))]
            return "  ".join(left + right).rstrip()

        rule = "-" * len(render(header))
        size = f"{_bytes(self.size_bytes)}"
        if self.compression is not None:
            size += f" vs {_bytes(self.twin_size_bytes)} for {self.twin} ({self.compression:.1f}× smaller)"
        gate_share = f" ({100 * self.asd_gate_flops / self.flops:.2f}% of FLOPs)" if self.flops else ""
        out = [
            f"{self.model}, input {'×'.join(map(str, self.input_size))}, counts per image",
            rule, render(header), rule, *map(render, lines), rule, render(total), rule,
            f"binary parameters     {self.binary_params:>15,}  (1 bit each)",
            f"real parameters       {self.real_params:>15,}  (32 bits each)",
            f"training-only params  {self.training_only_params:>15,}  (WSD alpha: folded into the signs at export)",
            f"BOPs                  {self.bops:>15,}  {_si(self.bops)}",
            f"FLOPs                 {self.flops:>15,}  {_si(self.flops)}",
            f"OPs = BOPs/64 + FLOPs {round(self.ops):>15,}  {_si(self.ops)}",
            f"  ASD gates           {self.asd_gate_flops:>15,}  FLOPs{gate_share}",
            f"element-wise ops      {self.elementwise_ops:>15,}  {_si(self.elementwise_ops)} (BN, activations, "
            "additions, pooling, sign; not in OPs)",
            f"model size            {size}",
        ]
        if self.speedup is not None:
            out.append(f"OPs vs twin           {_si(self.twin_flops)} FLOPs / {_si(self.ops)} OPs = "
                       f"{self.speedup:.1f}× fewer")
        if self.uncounted_ops:
            uncounted = ", ".join(f"{op}×{calls}" for op, calls in sorted(self.uncounted_ops.items()))
            out.append(f"not counted (no rule): {uncounted}")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.table()


def _si(value: float) -> str:
    """Three significant digits in scientific notation, as the papers print them: 1.68e9."""
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _bytes(value: float) -> str:
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f} B"


def markdown_table(summaries: Sequence[ModelSummary]) -> str:
    """One Markdown row per model: the table of docs/deploy.md."""
    lines = [
        "| model | input | binary params | real params | BOPs | FLOPs | OPs | ASD gates (FLOPs) | element-wise ops "
        "| size | twin size | compression |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in summaries:
        twin_size = "" if result.twin_size_bytes is None else _bytes(result.twin_size_bytes)
        compression = "" if result.compression is None else f"{result.compression:.1f}×"
        lines.append(
            f"| `{result.model}` | {'×'.join(map(str, result.input_size[1:]))} | {result.binary_params:,} "
            f"| {result.real_params:,} | {_si(result.bops)} | {_si(result.flops)} | {_si(result.ops)} "
            f"| {_si(result.asd_gate_flops)} | {_si(result.elementwise_ops)} | {_bytes(result.size_bytes)} "
            f"| {twin_size} | {compression} |"
        )
    return "\n".join(lines)

