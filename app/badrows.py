"""Counting and reporting bad input rows, deliberate skips and warnings without stopping a long job."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Sequence


def _example(path: str, line_no: int, value: object) -> str:
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)
    if len(text) > 120:
        text = text[:117] + "..."
    return f"{path}:{line_no}: {text!r}"


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

    Beside the bad rows it keeps `skipped` rows (valid rows deliberately left out, such as machine
    labels of classes outside the class list: counted, not errors) and `warnings` (whole-input
    problems such as an empty file or a split without images).

    Args:
        max_examples: how many `file:line: value` examples to keep per reason.
    """

    max_examples: int = 5
    counts: collections.Counter = field(default_factory=collections.Counter)
    examples: dict = field(default_factory=dict)
    skipped: collections.Counter = field(default_factory=collections.Counter)
    skipped_examples: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)

    def add(self, reason: str, path: str, line_no: int, value: object) -> None:
        """Records one bad row."""
        self.add_many(reason, path, [line_no], [value])

    def add_many(self, reason: str, path: str, line_nos: Sequence[int], values: Sequence) -> None:
        """Records bad rows of one reason at once (`values[i]` belongs to `line_nos[i]`)."""
        _record(self.counts, self.examples, self.max_examples, reason, path, line_nos, values)

    def skip_many(self, reason: str, path: str, line_nos: Sequence[int], values: Sequence) -> None:
        """Records valid rows that are deliberately not used."""
        _record(self.skipped, self.skipped_examples, self.max_examples, reason, path, line_nos, values)

    def merge_counts(self, counts: dict, examples: dict) -> None:
        """Adds another worker's bad-row counts and examples by reason (its `to_dict()` parts)."""
        for reason, count in counts.items():
            self.counts[reason] += count
            kept = self.examples.setdefault(reason, [])
            kept.extend(examples.get(reason, [])[: max(0, self.max_examples - len(kept))])

    def merge(self, other: dict) -> None:
        """Adds another worker's `to_dict()`: bad rows, skipped rows and warnings."""
        self.merge_counts(other["by_reason"], other["examples"])
        for reason, count in other["skipped"]["by_reason"].items():
            self.skipped[reason] += count
            kept = self.skipped_examples.setdefault(reason, [])
            kept.extend(other["skipped"]["examples"].get(reason, [])[: max(0, self.max_examples - len(kept))])
        self.warnings.extend(other["warnings"])

    def warn(self, message: str) -> None:
        """Records a warning about a whole input (e.g. `file: no data rows`)."""
        self.warnings.append(message)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        return {"total": self.total, "by_reason": dict(self.counts), "examples": self.examples,
                "skipped": {"total": sum(self.skipped.values()), "by_reason": dict(self.skipped),
                            "examples": self.skipped_examples},
                "warnings": list(self.warnings)}

    def report(self) -> str:
        """Returns a human-readable multi-line summary."""
        lines = [f"bad rows: {self.total}" if self.counts else "bad rows: none"]
        for reason, count in self.counts.most_common():
            lines.append(f"  {reason}: {count}")
            lines.extend(f"    e.g. {example}" for example in self.examples.get(reason, []))
        for reason, count in self.skipped.most_common():
            lines.append(f"skipped (valid, not used) {reason}: {count}")
            lines.extend(f"    e.g. {example}" for example in self.skipped_examples.get(reason, []))
        lines.extend(f"warning: {message}" for message in self.warnings)
        return "\n".join(lines)


def _record(counter: collections.Counter, examples: dict, limit: int, reason: str, path: str,
            line_nos: Sequence[int], values: Sequence) -> None:
    if len(line_nos) == 0:
        return
    counter[reason] += len(line_nos)
    kept = examples.setdefault(reason, [])
    for i in range(min(limit - len(kept), len(line_nos))):
        kept.append(_example(path, int(line_nos[i]), values[i]))
