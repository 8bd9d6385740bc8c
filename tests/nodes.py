"""``run_cli``: a short ``playtotv`` command run to completion; ``PORT0``: a node's environment for tests;
``read_until``: a process's output up to a line. Tests start nodes with
``playtotv.devtools.nodeprocess.NodeProcess``, the class the cluster and the benchmarks use.
"""

from __future__ import annotations

import os
import subprocess
from typing import Mapping

import trio

from playtotv.devtools.nodeprocess import playtotv_command

__all__ = ["PORT0", "read_until", "run_cli"]

#: Every listener on a free port and the store in memory; a short drain, since tests stop their nodes.
PORT0 = {
    "PLAYTOTV_GATEKEEPER_BIND": "127.0.0.1:0",
    "PLAYTOTV_CORE_BIND": "127.0.0.1:0",
    "PLAYTOTV_PUSH_BIND": "127.0.0.1:0",
    "PLAYTOTV_PUSH_POLLING_BIND": "127.0.0.1:0",
    "PLAYTOTV_STORE_URL": "sqlite:///:memory:",
    "PLAYTOTV_NODE_DRAIN_SECONDS": "1",
}


def run_cli(*args: str, env: Mapping[str, str] | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """A short CLI invocation (``--version``, a refused configuration) run to completion."""
    return subprocess.run(
        playtotv_command(*args), capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


async def read_until(proc: trio.Process, wanted: str) -> list[str]:
    """The lines ``proc`` prints up to and including ``wanted``; if it exits first, an AssertionError with
    its last lines (and the end of its standard error, when that is a pipe)."""
    assert proc.stdout is not None
    buffer, lines = b"", []
    async for chunk in proc.stdout:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        lines += [line.decode() for line in complete]
        if wanted in lines:
            return lines
    errors = "" if proc.stderr is None else (await proc.stderr.receive_some(65536)).decode(errors="replace")
    raise AssertionError(f"exited before {wanted!r}: {lines[-5:]} {errors[-1000:]}")
