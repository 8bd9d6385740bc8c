"""Admission capacity from measured quality of service (sans-io: numbers in, a capacity out).

In the spirit of Netflix's concurrency-limits (Gradient2) and Envoy's adaptive concurrency: while every
QoS signal is within its SLO, capacity grows with admissions (it only grows when it is being used, so an
idle platform does not talk itself into a huge number it never tested); when a signal breaches, capacity
stops at the current level and backs off; after a few healthy ticks it grows again. A breach with hardly
anyone admitted (a dead node, a restart's queue lag, a flood of connections nobody admitted) finds no
limit: once it is over, capacity grows back to where it was even with nobody connected, since growth by
use could never start from a capacity nobody can fill.

Three brakes, because admitted clients show in the signals only once they have connected, and an overshoot
cannot be taken back (the gatekeeper never disconnects anyone):

- growth waits for sessions *in use* (connected, as push nodes report), not for admissions still
  connecting, whose cost the signals do not show yet;
- growth slows as the worst signal nears its limit (its *pressure*, value / limit) and stops at
  ``GROW_UNTIL`` of it (the CPU share at ``CPU_GROW_UNTIL``), like Gradient2's gradient; once stopped
  there, it resumes only when the signal has been back clearly under that stop for a while
  (``RESUME_BELOW``, ``RESUME_AFTER``), so capacity settles instead of probing the edge;
- no step is larger than the push nodes absorb in handshakes in a tick (``max_step_per_node`` each).

``bench overload`` motivated all three: each growth step's clients connect at once, and a WebSocket
handshake costs a push node as much CPU as 80-200 fan-out deliveries, so full-speed steps made bursts that
breached the SLO well before the steady-state limit.

The controller is fed once per registry snapshot (about every second) by the gatekeeper.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Grow only when sessions in use (connected) fill at least this share of the current capacity.
GROW_WHEN_USED = 0.75
#: Multiplicative growth per healthy tick (plus a floor so small capacities grow too).
GROWTH_FACTOR = 1.25
GROWTH_MIN = 50
#: First breach: stop at the breaching load, backed off by this factor; later breach ticks back off gently.
#: Small, because the gatekeeper never disconnects anyone: the back-off only sets where growth resumes,
#: and a deeper one costs seconds of additive regrowth at every breach near the limit.
BREACH_BACKOFF = 0.97
#: Gentle, because a push node's fan-out p99 is a tail figure over 10-20 s of messages: one bad second
#: stays "in breach" for ten ticks or more, and a steeper back-off a tick compounds over them.
#: Applied only while the breach worsens (the worst signal's pressure rises), see ``update``.
SUSTAINED_BACKOFF = 0.99
#: Healthy ticks needed after a breach before growth resumes (one good sample is not a recovery).
RECOVERY_TICKS = 3
MIN_CAPACITY = 10
#: Growth stops when the worst signal reaches this share of its SLO; below it, growth is proportional to
#: the room left (full speed at pressure 0). The margin covers the signals' lag and a growth step's burst:
#: an overshoot cannot be taken back, so protecting those already admitted comes first (docs/decisions.md).
GROW_UNTIL = 0.8
#: ...except the CPU share, which stops at this share of its limit (and resumes under ``RESUME_BELOW`` of
#: it): a 5 s average that moves by about ±0.07 second to second, so at 0.8 its peaks alone held capacity
#: well short of the knee; higher, growth's own handshakes pushed the node into saturation (docs/decisions.md).
CPU_GROW_UNTIL = 0.85
#: Once a breach has shown where the limit is, growth is additive (AIMD): at most this many sessions a
#: tick per push node, scaled by the room left. Each growth step's clients all handshake at once, and near
#: the limit multiplicative steps breach the SLO; a small step is a burst the node absorbs, at a known pace.
ADDITIVE_STEP = 20
#: Before any breach, a growth step is still at most this many sessions per push node (placement spreads
#: the newcomers' handshakes over the push nodes): multiplicative growth gets a small platform going fast,
#: but one uncapped step's handshakes can breach the SLO far below the knee, and the back-off and additive
#: recovery that follow cost far more capacity than the cap does.
MAX_GROWTH_STEP = 50
#: ...and while the room left is at least ``FLOOR_ROOM``, a growth step is never smaller than this many
#: sessions per push node: the step proportional to the room left otherwise shrinks towards nothing well
#: short of the stop, and capacity crawls far from any limit.
MIN_GROWTH_STEP = 5
#: The floor ends here (a latency at 0.6 of its SLO, the CPU share at 0.6): nearer the stop, growth is only
#: proportional to the room left and slows to a crawl, which is how it settles without a burst; a floor all
#: the way to the stop keeps newcomers' handshakes coming at the very edge.
FLOOR_ROOM = 0.25
#: Once the stop has been reached (or a breach seen), growth waits until the worst signal is back under
#: this share of its stop, not merely under it: a tail figure hovering at the stop dips under it by chance,
#: and growing on every dip probes the limit instead of holding below it.
RESUME_BELOW = 0.9
#: ...and has stayed there for this many ticks in a row: a dip of a few seconds is the signals' own noise,
#: and resuming on each one creeps capacity up to the knee (an overshoot stays: nobody is disconnected).
#: Ten ticks is longer than the push node's fan-out window: a signal under the resume level that long has
#: really come down.
RESUME_AFTER = 10
#: ...and additive growth lasts until capacity has passed the breach that found the limit by this factor,
#: healthy all the way: then that breach was a burst, not the limit, and growth is multiplicative (still
#: bounded per node, still slowing near the SLO) again, like CUBIC speeding up once well past the window
#: of its last loss; a burst breach far below the knee otherwise leaves growth additive for minutes.
FORGET_BREACH_BEYOND = 1.5


@dataclass
class Slo:
    """The signal limits; a node reporting a value above its limit is in breach. ``stops``: the share of
    its limit at which a signal stops growth, where it is not ``GROW_UNTIL``."""

    limits: dict[str, float]
    stops: dict[str, float] = field(default_factory=lambda: {"cpu_busy": CPU_GROW_UNTIL})

    def breaches(self, signals: list[dict[str, float]]) -> list[str]:
        found = []
        for node_signals in signals:
            for name, limit in self.limits.items():
                value = node_signals.get(name)
                if value is not None and value > limit:
                    found.append(f"{name}={value:g}>{limit:g}")
        return found

    def pressure(self, signals: list[dict[str, float]]) -> float:
        """The highest signal as a share of its limit, scaled so that every signal's stop reads
        ``GROW_UNTIL``: 0 idle, ``GROW_UNTIL`` at a stop, about 1 at the SLO, above it in breach."""
        return max((node_signals[name] / limit * (GROW_UNTIL / self.stops[name] if name in self.stops else 1.0)
                    for node_signals in signals for name, limit in self.limits.items()
                    if node_signals.get(name) is not None), default=0.0)


@dataclass
class CapacityController:
    initial: int
    ceiling: int  # never grows past this (the licensed capacity: beyond it QoS capacity is moot)
    #: The bound on a growth step per push node (``gatekeeper.qos_growth_per_push_node``): what a push node
    #: absorbs in new WebSocket handshakes in a second. 50 suits small nodes (bench overload's 0.1 CPU);
    #: a node with a whole core absorbs several times more.
    max_step_per_node: int = MAX_GROWTH_STEP
    capacity: float = field(init=False)
    breached: bool = field(default=False, init=False)
    healthy_ticks: int = field(default=RECOVERY_TICKS, init=False)
    last_breaches: list[str] = field(default_factory=list, init=False)
    last_pressure: float = field(default=0.0, init=False)
    limit_found: bool = field(default=False, init=False)  # a breach has been seen: grow additively
    limit_level: float = field(default=0.0, init=False)  # where that breach left capacity
    breach_anchor: float = field(default=0.0, init=False)  # the current breach's load, backed off
    holding: bool = field(default=False, init=False)  # a stop or breach was reached; see RESUME_BELOW
    calm_ticks: int = field(default=0, init=False)  # ticks in a row under the resume level (RESUME_AFTER)
    #: Where capacity was before a breach that found no limit cut it; it grows back there unused.
    restore_to: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.capacity = float(max(MIN_CAPACITY, min(self.initial, self.ceiling)))

    def update(self, admitted: int, breaches: list[str], pressure: float = 0.0, in_use: int | None = None,
               push_nodes: int = 1) -> int:
        """One tick. ``admitted``: sessions counted against capacity (connected + recently admitted);
        ``breaches``: the signals over their limit; ``pressure``: the worst signal's share of its limit (0:
        unknown or idle, full-speed growth); ``in_use``: the sessions the nodes report holding (default
        ``admitted``); ``push_nodes``: how many push nodes share the newcomers (growth steps scale with
        it). Growth waits for ``in_use``, not for admissions still connecting: their cost is not in the
        signals yet, and growing on it is growing blind (bench overload: capacity raced ahead of a slow
        push node's handshakes and the backlog breached the SLO)."""
        in_use = admitted if in_use is None else in_use
        self.last_breaches = breaches
        worsening = pressure > self.last_pressure
        self.last_pressure = pressure
        if breaches:
            # Backed off from the load that breached, not from a capacity already below it: a breach
            # says that ``admitted`` sessions are too many, nothing about fewer. With the gatekeeper
            # already refusing everyone (capacity under what is in, nobody leaving), each new breach
            # of the same load would compound the back-off and sink capacity under what the platform holds.
            if not self.breached:
                self.breach_anchor = float(admitted) * BREACH_BACKOFF
            elif worsening:
                self.breach_anchor *= SUSTAINED_BACKOFF
            # else: the breach is not getting worse (the same bad samples still in a node's window, or
            # fewer of them): hold. Backing off on a breach that only lingered in a window took 10 % off
            # capacity for one bad second in bench overload.
            before = self.capacity
            self.capacity = max(float(MIN_CAPACITY), min(self.capacity, self.breach_anchor))
            self.breached = True
            # A breach with hardly anyone admitted (a node starting up or gone, a GC pause, a restart's
            # queue lag) says nothing about how many sessions the platform holds: it pauses admissions
            # while it lasts; once it is over, capacity grows back (see below) and multiplicatively.
            if admitted >= MIN_CAPACITY:
                self.limit_found, self.limit_level, self.holding = True, self.capacity, True
                self.restore_to = 0.0
            else:
                self.restore_to = max(self.restore_to, before)
            self.healthy_ticks = self.calm_ticks = 0
        else:
            self.breached = False
            self.healthy_ticks += 1
            self.calm_ticks = self.calm_ticks + 1 if pressure < GROW_UNTIL * RESUME_BELOW else 0
            if pressure >= GROW_UNTIL:
                self.holding = True
            elif self.calm_ticks >= RESUME_AFTER:
                self.holding = False
            healthy = self.healthy_ticks >= RECOVERY_TICKS
            if not self.holding and healthy and in_use >= self.capacity * GROW_WHEN_USED:
                self._grow(pressure, push_nodes, top=float(self.ceiling))
            elif healthy and self.capacity < self.restore_to and pressure < GROW_UNTIL:
                # Growth by use cannot start when nobody can get in to use the capacity: a breach that
                # found no limit left the platform refusing everyone, for good (0 admitted, capacity at
                # the floor). Back to where it was, unused, at the pace of ordinary growth.
                self._grow(pressure, push_nodes, top=min(float(self.ceiling), self.restore_to))
            if self.capacity >= self.restore_to:
                self.restore_to = 0.0
        return self.value

    def _grow(self, pressure: float, push_nodes: int, top: float) -> None:
        room = max(0.0, 1.0 - pressure / GROW_UNTIL)
        nodes = max(1, push_nodes)
        bound = float(self.max_step_per_node * nodes)
        if self.limit_found and self.capacity >= self.limit_level * FORGET_BREACH_BEYOND:
            self.limit_found = False  # well past it, healthy: that breach was not the limit
        if self.limit_found:
            step = min(float(ADDITIVE_STEP * nodes), bound)
        else:
            step = min(self.capacity * (GROWTH_FACTOR - 1.0) + GROWTH_MIN, bound)
        growth = room * step
        if room >= FLOOR_ROOM:
            growth = max(growth, min(float(MIN_GROWTH_STEP * nodes), step))
        self.capacity = min(top, self.capacity + growth)

    @property
    def value(self) -> int:
        return int(self.capacity)
