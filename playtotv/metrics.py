"""Prometheus metrics of one process (every role in it shares one registry, labelled by role)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

#: Buckets for HTTP latency: answers and admissions live in the low milliseconds, long polls in seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: Buckets for garbage-collection pauses: young collections take well under a millisecond, a full one of
#: a big heap tens of milliseconds, stretched by a CPU quota to the tenths of a second that breach SLOs.
GC_PAUSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "playtotv_http_requests", "HTTP requests served", ["role", "method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "playtotv_http_request_seconds", "HTTP request latency", ["role", "route"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.connections = Gauge(
            "playtotv_connections", "Open client connections", ["role", "kind"], registry=r
        )
        self.connections_refused = Counter(
            "playtotv_connections_refused", "Connections closed on accept: a listener or address cap reached",
            ["role", "reason"], registry=r,
        )
        self.accept_errors = Counter(
            "playtotv_accept_errors", "Accepts that failed for lack of resources (EMFILE, ...)", ["role"], registry=r
        )
        self.ready = Gauge("playtotv_ready", "1 when dependencies answer and the node is registered", registry=r)
        self.loop_lag = Gauge("playtotv_event_loop_lag_seconds", "Latest measured event-loop lag", registry=r)
        self.published = Counter(
            "playtotv_messages_published", "Messages published on channels", ["role"], registry=r
        )
        self.delivered = Counter(
            "playtotv_frames_delivered", "Frames handed to client connections", ["role", "transport"], registry=r
        )
        self.dropped_slow = Counter(
            "playtotv_slow_clients_dropped", "Clients dropped because their outbox overflowed", registry=r
        )
        self.queue_items = Counter(
            "playtotv_queue_items", "Queue items processed", ["queue", "outcome"], registry=r
        )
        self.admissions = Counter(
            "playtotv_admissions", "Gatekeeper decisions", ["outcome"], registry=r
        )
        self.admitted = Gauge("playtotv_admitted_sessions", "Admitted sessions (gatekeeper view)", registry=r)
        self.capacity = Gauge("playtotv_capacity", "Current admission capacity (gatekeeper view)", registry=r)
        # Autoscaling signals (playtotv.autoscale_gauges mirrors the node's registry load and QoS into these).
        self.load = Gauge("playtotv_load", "Load this node reports to the registry", ["signal"], registry=r)
        self.qos = Gauge("playtotv_qos", "Quality of service this node reports to the registry", ["signal"],
                         registry=r)
        self.gc_pause = Histogram(
            "playtotv_gc_pause_seconds", "Garbage-collection pauses of this process (playtotv.gcpause)",
            ["generation"], buckets=GC_PAUSE_BUCKETS, registry=r,
        )
        self.inflight = Gauge("playtotv_http_inflight", "HTTP requests being served", ["role"], registry=r)
        self.queue_backlog = Gauge(
            "playtotv_queue_backlog", "Queue items waiting or claimed (cluster-wide, read by workers)",
            ["queue", "state"], registry=r,
        )

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
