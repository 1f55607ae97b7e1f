"""Reports: plain dataclasses that render to a text table, JSON and Markdown.

Doctor findings, export reports and benchmark results all become a :class:`Report`, so
there is one renderer for every command.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable
from typing import Any

OK, INFO, WARN, ERROR = "ok", "info", "warn", "error"
_SEVERITY = {OK: 0, INFO: 0, WARN: 1, ERROR: 2}


@dataclasses.dataclass(frozen=True)
class Finding:
    """One check's outcome.

    Args:
        check: short name of the check (``"config"``, ``"weights"``, ...).
        status: ``ok``, ``info``, ``warn`` or ``error``.
        message: what was found, naming the file / field / value.
        fix: what to do about it (empty when nothing needs doing).
        error: the typed error behind an ``error`` finding, which ``load`` raises.
    """

    check: str
    status: str
    message: str
    fix: str = ""
    error: Exception | None = dataclasses.field(default=None, compare=False, repr=False)

    def to_row(self) -> dict[str, str]:
        return {"check": self.check, "status": self.status, "message": self.message, "fix": self.fix}


def worst_exit_code(findings: Iterable[Finding]) -> int:
    """0 when healthy, 1 with warnings only, 2 with any error."""
    return max((_SEVERITY[f.status] for f in findings), default=0)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4f}".rstrip("0").rstrip(".") if not value.is_integer() else f"{value:.1f}"
    return "" if value is None else str(value)


@dataclasses.dataclass
class Report:
    """A titled table plus free-form summary fields.

    Example:
        >>> r = Report("demo", columns=["name", "value"], rows=[{"name": "a", "value": 1.5}])
        >>> print(r.to_markdown().splitlines()[2])
        | name | value |
    """

    title: str
    columns: list[str]
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_findings(cls, title: str, findings: Iterable[Finding], **summary: Any) -> Report:
        rows = [f.to_row() for f in findings]
        return cls(title, ["check", "status", "message", "fix"], rows, dict(summary))

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "summary": self.summary, "rows": self.rows}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def to_markdown(self) -> str:
        lines = [f"## {self.title}", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        for row in self.rows:
            cells = (_cell(row.get(c)).replace("|", "\\|") for c in self.columns)
            lines.append("| " + " | ".join(cells) + " |")
        if self.summary:
            lines.append("")
            lines.extend(f"- **{k}**: {_cell(v)}" for k, v in self.summary.items())
        return "\n".join(lines) + "\n"

    def to_table(self, max_width: int = 100) -> str:
        """A fixed-width text table for terminals; long cells wrap at ``max_width``."""
        cells = [[_cell(row.get(c)) for c in self.columns] for row in self.rows]
        widths = [len(c) for c in self.columns]
        for row in cells:
            widths = [min(max(w, len(v)), max_width) for w, v in zip(widths, row, strict=False)]
        def fmt(values: list[str]) -> list[str]:
            wrapped = [[v[i:i + w] for i in range(0, max(len(v), 1), w)] or [""]
                       for v, w in zip(values, widths, strict=False)]
            height = max(len(w) for w in wrapped)
            return ["  ".join((w[i] if i < len(w) else "").ljust(width)
                              for w, width in zip(wrapped, widths, strict=False)).rstrip()
                    for i in range(height)]
        lines = [self.title, *fmt(self.columns), "  ".join("-" * w for w in widths)]
        for row in cells:
            lines.extend(fmt(row))
        lines.extend(f"{k}: {_cell(v)}" for k, v in self.summary.items())
        return "\n".join(lines) + "\n"

    def write(self, stem: str) -> tuple[str, str]:
        """Write ``<stem>.json`` and ``<stem>.md``; returns both paths."""
        paths = (f"{stem}.json", f"{stem}.md")
        for path, text in zip(paths, (self.to_json(), self.to_markdown()), strict=False):
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        return paths


def write_json(result: Any, path: str) -> str:
    """Write a benchmark script's ``result`` to ``path`` as indented JSON through a temporary sibling
    (a killed run never leaves half a file); returns the text, for printing."""
    text = json.dumps(result, indent=2)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    os.replace(tmp, path)
    return text
