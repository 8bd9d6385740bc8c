"""What a client sends never becomes a label value on ``/metrics``: made-up methods are counted as
"other", unknown paths as "unmatched", and the series stay the same however many of them arrive."""

from __future__ import annotations

import random
import re
import string

import httpx
import trio

from playtotv.http import METRIC_METHODS, metric_method, metric_status
from tests.inprocess import start_node

TEST_BOUND = 60.0
#: Long methods, as a probe sent them (each distinct one used to add a series of that size).
METHOD_BYTES = 8 * 1024
_REQUEST_SERIES = re.compile(r"^playtotv_http_requests_total\{(.*)\}", re.M)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def test_labels_come_from_closed_sets() -> None:
    assert metric_method("GET") == "GET" and metric_method("BREW") == "other"
    assert metric_method("get") == "other"  # methods are case-sensitive: "get" is not GET
    assert metric_status(404) == "404" and metric_status(599) == "5xx" and metric_status(299) == "2xx"


def made_up_method(rng: random.Random) -> bytes:
    return "".join(rng.choices(string.ascii_uppercase, k=METHOD_BYTES)).encode()


async def send_raw(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = await stream.receive_some(65536)
            if not data:
                break
            answer += data
        return answer


def request_series(metrics: str) -> set[tuple[tuple[str, str], ...]]:
    return {tuple(_LABEL.findall(labels)) for labels in _REQUEST_SERIES.findall(metrics)}


async def test_made_up_methods_do_not_add_series(nursery: trio.Nursery) -> None:
    node = await start_node(nursery, ["gatekeeper", "core", "push", "worker", "scheduler"])
    rng = random.Random(19)
    targets = [(node.url("core"), b"/v1/shows"), (node.url("core"), b"/no/such/path"),
               (node.url("gatekeeper"), b"/v1/session"), (node.url("push-polling"), b"/v1/poll")]

    async def probe(count: int) -> None:
        for i in range(count):
            url, path = targets[i % len(targets)]
            answer = await send_raw(url, made_up_method(rng) + b" " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 4"), answer[:100]

    with trio.fail_after(TEST_BOUND):
        async with httpx.AsyncClient(timeout=10) as http:
            await http.get(f"{node.url('core')}/metrics")  # its own series exists from now on
            await probe(40)
            first = (await http.get(f"{node.url('core')}/metrics")).text
            await probe(120)
            second = (await http.get(f"{node.url('core')}/metrics")).text
    series = request_series(second)
    assert series == request_series(first)  # the counts grew, the series did not
    methods = {value for labels in series for name, value in labels if name == "method"}
    assert "other" in methods and methods <= METRIC_METHODS | {"other"}
    assert len(second) < 200 * 1024  # one made-up method alone is 8 KB
