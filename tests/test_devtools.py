"""The tooling's seams: the runtime does not depend on ``playtotv.devtools``; the node's standard output
lines are printed and parsed by one pair of functions; RESP is encoded and parsed in one place."""

from __future__ import annotations

import subprocess
import sys

import pytest

from playtotv.cli import listening_line, parse_listening_line
from playtotv.devtools.localredis import Incomplete, RedisError, encode_command, parse_reply

RUNTIME = ["playtotv.node", "playtotv.http", "playtotv.roles.core", "playtotv.roles.gatekeeper", "playtotv.roles.push",
           "playtotv.roles.worker", "playtotv.roles.scheduler"]


@pytest.mark.slow  # a fresh interpreter
def test_the_runtime_imports_no_devtools() -> None:
    probe = (f"import sys; import {', '.join(RUNTIME)}; "
             "print(sorted(m for m in sys.modules if m.startswith('playtotv.devtools')))")
    out = subprocess.run([sys.executable, "-P", "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_listening_lines_round_trip() -> None:
    for name, url in (("core", "http://127.0.0.1:8001"), ("push-polling", "http://[::1]:9"),
                      ("core-1 core", "http://127.0.0.1:5")):  # ``playtotv cluster up`` names the process too
        assert parse_listening_line(listening_line(name, url)) == (name, url)
        assert parse_listening_line(listening_line(name, url) + "\n") == (name, url)
    for other in ("ready", "director key: dk_x", "listening on http://x", "core listening on ", ""):
        assert parse_listening_line(other) is None


def test_resp_replies_parse_whole_or_not_at_all() -> None:
    assert encode_command("SET", "k", 1) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n"
    reply = b"*3\r\n$7\r\nmessage\r\n$-1\r\n*2\r\n:42\r\n+OK\r\n-ERR no\r\n"
    value, end = parse_reply(reply)
    assert value == [b"message", None, [42, b"OK"]] and reply[end:] == b"-ERR no\r\n"
    error, _ = parse_reply(reply, end)
    assert isinstance(error, RedisError) and str(error) == "ERR no"
    for cut in range(end):  # any prefix of a reply is incomplete, never misread
        with pytest.raises(Incomplete):
            parse_reply(reply[:cut])
