"""Paired statistics over seeds: mean ± std per system and the paired difference with a t-interval."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

# Two-sided 95% quantiles of Student's t (0.975), by degrees of freedom.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 25: 2.060, 30: 2.042}


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (df >= 1; from the table, rounding
    df down to a tabulated value, which widens the interval; 1.96 beyond 30 would narrow it, so 2.042)."""
    if df < 1:
        raise ValueError(f"a t-interval needs at least 2 paired values. Received: df={df}")
    return T975[max(k for k in T975 if k <= df)]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


@dataclass
class PairedDifference:
    """`a − b` over paired seeds: mean, 95% t-interval (None with one seed) and the verdict."""

    mean: float
    low: float | None
    high: float | None
    n: int

    @classmethod
    def of(cls, a: Sequence[float], b: Sequence[float]) -> "PairedDifference":
        """The paired difference of two systems' values on the same seeds, in the same order."""
        if len(a) != len(b) or not a:
            raise ValueError(f"paired values need the same seeds. Received: {len(a)} and {len(b)} values")
        diffs = [x - y for x, y in zip(a, b)]
        mean, std = mean_std(diffs)
        if len(diffs) < 2:
            return cls(mean, None, None, 1)
        half = t975(len(diffs) - 1) * std / math.sqrt(len(diffs))
        return cls(mean, mean - half, mean + half, len(diffs))

    @property
    def verdict(self) -> str:
        """`gain` or `loss` where the interval excludes 0, `no gain` where it includes 0."""
        if self.low is None:
            return "one seed: no interval"
        if self.low > 0:
            return "gain"
        return "loss" if self.high < 0 else "no gain"

    def __str__(self) -> str:
        if self.low is None:
            return f"{self.mean:+.4f}"
        return f"{self.mean:+.4f} [{self.low:+.4f}, {self.high:+.4f}] {self.verdict}"


if __name__ == "__main__":
    raise SystemExit("tuning/paired.py is a library module (paired differences and their intervals): "
                     "run python tuning/search.py --help or python tuning/compare.py --help")
