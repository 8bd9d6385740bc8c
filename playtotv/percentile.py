"""The one percentile of the project, runtime and tooling alike: nearest rank.

The ``fraction`` percentile of ``n`` sorted values is the value of rank ``ceil(fraction * n)`` (ranks
count from 1; fraction 0 gives the smallest, 1 the largest). It is always one of the observed values,
never an interpolation, so "p99 = 40 ms" means a request really took 40 ms; of fewer than 100 values
the p99 is the maximum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T", int, float)


def percentile(sorted_values: Sequence[T], fraction: float) -> T | None:
    """Nearest-rank ``fraction`` (0..1) percentile of ``sorted_values`` (ascending: callers sort once and
    ask several fractions); None when there are no values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]
