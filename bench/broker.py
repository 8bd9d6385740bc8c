"""Broker fan-out: publish -> subscriber throughput and latency, memory broker vs Redis broker.

    python -m bench broker [--messages N] [--subscribers K] [--publishers P] [--rate R]

Two phases per broker, both on one channel with K subscriptions (with Redis: K pub/sub connections):

- throughput: P publisher tasks publish N messages as fast as the broker accepts them; throughput is N
  over the time from the first publish to the last receipt by every subscriber;
- latency: one publisher publishes min(N, 2000) messages paced at R per second (below both brokers'
  capacity, so the figure is delivery time, not queueing behind a flood); latency runs from just before
  ``publish()`` to receipt, for every (message, subscriber).

Redis is a redis-server of our own on a free loopback port, started and stopped here. Speed is compared
as a ratio (Redis / memory), because absolute numbers on a shared machine are noise (docs/architecture.md §9).
Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import AsyncExitStack
from typing import Any

import trio

from playtotv.broker import Broker, SubscriptionReset, open_broker
from playtotv.percentile import percentile

#: Size of each message: about one interaction frame of the push protocol.
PAYLOAD_BYTES = 256
#: Digits of the send timestamp (nanoseconds) at the head of each payload.
STAMP_DIGITS = 20
#: Upper bound for one broker's run, so a stuck run ends with partial figures instead of hanging.
RUN_BOUND = 120.0
#: Messages of the paced latency phase (at --rate per second: a few seconds).
PACED_MESSAGES_MAX = 2000


def _payload(stamp_ns: int) -> bytes:
    return str(stamp_ns).zfill(STAMP_DIGITS).encode().ljust(PAYLOAD_BYTES, b".")


def _percentile_ms(sorted_ns: list[int], fraction: float) -> float:
    value = percentile(sorted_ns, fraction)
    return float("nan") if value is None else value / 1e6


class _Receipts:
    """What the subscribers of one phase saw."""

    def __init__(self) -> None:
        self.latencies_ns: list[int] = []
        self.resets = 0
        self.last_ns = 0

    async def receive(self, subscription: Any, last_offset: int) -> None:
        async for item in subscription:
            now = time.perf_counter_ns()
            if isinstance(item, SubscriptionReset):
                self.resets += 1
                continue
            self.latencies_ns.append(now - int(item.data[:STAMP_DIGITS]))
            self.last_ns = max(self.last_ns, now)
            if item.offset >= last_offset:
                return


async def _phase(
    broker: Broker, channel: str, subscribers: int, messages: int, publish: Any
) -> tuple[_Receipts, int, bool]:
    """Subscribe, run ``publish()``, wait until every subscriber saw ``messages`` messages (or RUN_BOUND)."""
    receipts = _Receipts()
    started_ns = time.perf_counter_ns()
    with trio.move_on_after(RUN_BOUND) as bound:
        async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
            for _ in range(subscribers):
                subscription = await stack.enter_async_context(broker.subscribe([channel]))
                nursery.start_soon(receipts.receive, subscription, messages)
            started_ns = time.perf_counter_ns()
            await publish()
    complete = not bound.cancelled_caught and len(receipts.latencies_ns) == messages * subscribers
    return receipts, started_ns, complete


async def measure(
    broker: Broker, messages: int, subscribers: int, publishers: int, rate: float
) -> dict[str, Any]:
    async def flood() -> None:
        async def publish_share(count: int) -> None:
            for _ in range(count):
                await broker.publish("flood", _payload(time.perf_counter_ns()))

        async with trio.open_nursery() as nursery:
            for i in range(publishers):
                nursery.start_soon(publish_share, messages // publishers + (i < messages % publishers))

    paced_messages = min(messages, PACED_MESSAGES_MAX)

    async def paced() -> None:
        next_at = trio.current_time()
        for _ in range(paced_messages):
            await broker.publish("paced", _payload(time.perf_counter_ns()))
            next_at += 1 / rate
            await trio.sleep_until(next_at)

    flooded, started_ns, flood_complete = await _phase(broker, "flood", subscribers, messages, flood)
    elapsed = max(flooded.last_ns - started_ns, 1) / 1e9
    timed, _, paced_complete = await _phase(broker, "paced", subscribers, paced_messages, paced)
    latencies = sorted(timed.latencies_ns)
    return {
        "complete": flood_complete and paced_complete,
        "throughput_msgs_per_s": round(messages / elapsed),
        "deliveries_per_s": round(len(flooded.latencies_ns) / elapsed),
        "latency_ms": {
            "p50": round(_percentile_ms(latencies, 0.50), 3),
            "p99": round(_percentile_ms(latencies, 0.99), 3),
            "max": round(_percentile_ms(latencies, 1.0), 3),
        },
        "resets": flooded.resets + timed.resets,
    }


async def run(
    redis_url: str, messages: int, subscribers: int, publishers: int, rate: float
) -> dict[str, Any]:
    # Buffers hold the whole run: this measures delivery, not the slow-subscriber cut-off.
    options = {"subscriber_buffer": messages + 1}
    results: dict[str, Any] = {}
    for name, url in (("memory", None), ("redis", redis_url)):
        async with open_broker(url, **options) as broker:
            results[name] = await measure(broker, messages, subscribers, publishers, rate)
    return results


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench broker", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=10_000, help="messages published in total")
    parser.add_argument("--subscribers", type=int, default=4, help="subscriptions receiving every message")
    parser.add_argument("--publishers", type=int, default=4, help="concurrent publisher tasks")
    parser.add_argument("--rate", type=float, default=500.0, help="messages per second of the latency phase")
    args = parser.parse_args(argv)
    if not 1 <= args.messages <= 1_000_000:
        parser.error("--messages 1..1000000")
    if not (1 <= args.subscribers <= 1000 and 1 <= args.publishers <= 1000):
        parser.error("--subscribers and --publishers 1..1000")
    if not 1 <= args.rate <= 100_000:
        parser.error("--rate 1..100000")

    from playtotv.devtools.localredis import RedisServer

    server = RedisServer().start()
    try:
        results = trio.run(run, server.url, args.messages, args.subscribers, args.publishers, args.rate)
    finally:
        server.close()

    memory, redis = results["memory"], results["redis"]
    summary = {
        "benchmark": "broker",
        "messages": args.messages,
        "subscribers": args.subscribers,
        "publishers": args.publishers,
        "rate_per_s": args.rate,
        "payload_bytes": PAYLOAD_BYTES,
        **results,
        "ratio_redis_to_memory_throughput": round(
            redis["throughput_msgs_per_s"] / max(memory["throughput_msgs_per_s"], 1), 3
        ),
        "ratio_redis_to_memory_p99_latency": round(
            redis["latency_ms"]["p99"] / max(memory["latency_ms"]["p99"], 1e-6), 1
        ),
    }
    print(json.dumps(summary))
    return 0 if memory["complete"] and redis["complete"] else 1
