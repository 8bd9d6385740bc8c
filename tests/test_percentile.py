"""The project's one percentile is nearest rank (playtotv/percentile.py)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from playtotv.percentile import percentile


def test_nearest_rank_on_a_known_series() -> None:
    values = list(range(1, 101))  # 1..100: the p-th percentile is p
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.95) == 95
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile(values, 0.0) == 1
    assert percentile([10, 20], 0.5) == 10  # rank ceil(1) = 1, not the upper of the two
    assert percentile([1.0] * 20 + [9.0], 0.95) == 1.0  # 20 of 21 values (95.2 %) are at or below 1.0
    assert percentile([], 0.5) is None


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1), st.floats(0.0, 1.0))
def test_it_is_the_smallest_observed_value_with_the_fraction_at_or_below_it(values: list[float], q: float) -> None:
    ordered = sorted(values)
    p = percentile(ordered, q)
    assert p in ordered
    at_or_below = sum(v <= p for v in ordered)
    assert at_or_below >= math.ceil(q * len(ordered))
    assert all(sum(v <= smaller for v in ordered) < math.ceil(q * len(ordered)) for smaller in ordered if smaller < p)
