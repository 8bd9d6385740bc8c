"""Admission capacity from measured quality of service (sans-io: numbers in, a capacity out).

In the spirit of Netflix's concurrency-limits (Gradient2) and Envoy's adaptive concurrency: while every
QoS signal is within its SLO, capacity grows with admissions (it only grows when it is being used, so an
idle platform does not talk itself into a huge number it never tested); when a signal breaches, capacity
stops at the current level and backs off; after a few healthy ticks it grows again.

The controller is fed once per registry snapshot (about every second) by the gatekeeper.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Grow only when admissions use at least this share of the current capacity.
GROW_WHEN_USED = 0.75
#: Multiplicative growth per healthy tick (plus a floor so small capacities grow too).
GROWTH_FACTOR = 1.25
GROWTH_MIN = 50
#: First breach: stop at the current level, backed off by this factor; later breach ticks back off gently.
BREACH_BACKOFF = 0.95
SUSTAINED_BACKOFF = 0.98
#: Healthy ticks needed after a breach before growth resumes (one good sample is not a recovery).
RECOVERY_TICKS = 3
MIN_CAPACITY = 10


@dataclass
class Slo:
    """The signal limits; a node reporting a value above its limit is in breach."""

    limits: dict[str, float]

    def breaches(self, signals: list[dict[str, float]]) -> list[str]:
        found = []
        for node_signals in signals:
            for name, limit in self.limits.items():
                value = node_signals.get(name)
                if value is not None and value > limit:
                    found.append(f"{name}={value:g}>{limit:g}")
        return found


@dataclass
class CapacityController:
    initial: int
    ceiling: int  # never grows past this (the licensed capacity: beyond it QoS capacity is moot)
    capacity: float = field(init=False)
    breached: bool = field(default=False, init=False)
    healthy_ticks: int = field(default=RECOVERY_TICKS, init=False)
    last_breaches: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.capacity = float(max(MIN_CAPACITY, min(self.initial, self.ceiling)))

    def update(self, admitted: int, breaches: list[str]) -> int:
        self.last_breaches = breaches
        if breaches:
            if not self.breached:
                self.capacity = min(self.capacity, float(admitted)) * BREACH_BACKOFF
            else:
                self.capacity *= SUSTAINED_BACKOFF
            self.capacity = max(float(MIN_CAPACITY), self.capacity)
            self.breached = True
            self.healthy_ticks = 0
        else:
            self.breached = False
            self.healthy_ticks += 1
            if self.healthy_ticks >= RECOVERY_TICKS and admitted >= self.capacity * GROW_WHEN_USED:
                self.capacity = min(float(self.ceiling), self.capacity * GROWTH_FACTOR + GROWTH_MIN)
        return self.value

    @property
    def value(self) -> int:
        return int(self.capacity)
