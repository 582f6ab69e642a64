"""Counting and reporting bad input rows without stopping a long job."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field


class Refused(ValueError):
    """An input refused for a reason that is counted and reported, not raised to the user.

    Args:
        reason: a short token for reports and manifests (`truncated`, `http_404`, ...).
        detail: what was received.
    """

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class BadRows:
    """Counts bad rows by reason and keeps the first few examples of each.

    Args:
        max_examples: how many `file:line: value` examples to keep per reason.
    """

    max_examples: int = 5
    counts: collections.Counter = field(default_factory=collections.Counter)
    examples: dict = field(default_factory=dict)

    def add(self, reason: str, path: str, line_no: int, value: object) -> None:
        """Records one bad row."""
        self.counts[reason] += 1
        kept = self.examples.setdefault(reason, [])
        if len(kept) < self.max_examples:
            text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)
            if len(text) > 120:
                text = text[:117] + "..."
            kept.append(f"{path}:{line_no}: {text!r}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        return {"total": self.total, "by_reason": dict(self.counts), "examples": self.examples}

    def report(self) -> str:
        """Returns a human-readable multi-line summary."""
        if not self.counts:
            return "bad rows: none"
        lines = [f"bad rows: {self.total}"]
        for reason, count in self.counts.most_common():
            lines.append(f"  {reason}: {count}")
            lines.extend(f"    e.g. {example}" for example in self.examples.get(reason, []))
        return "\n".join(lines)
