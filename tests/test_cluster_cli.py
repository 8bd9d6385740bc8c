"""``playtotv cluster up`` and ``playtotv warmup`` as documented: a developer starts a local cluster,
reads its endpoints, warms it up, and stops it with Ctrl-C, which leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import httpx
import pytest
import trio

from playtotv.cli import parse_listening_line
from playtotv.devtools.nodeprocess import playtotv_command
from tests.nodes import read_until, run_cli

pytestmark = pytest.mark.slow

TEST_BOUND = 90.0
#: Ctrl-C stops the cluster within this (each node drains for 2 s, Redis stops at once).
STOP_BOUND = 20.0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is gone for our purposes
        return f.read().split()[2] != "Z"


async def test_cluster_up_prints_endpoints_serves_warms_up_and_stops_on_ctrl_c() -> None:
    command = playtotv_command("cluster", "up", "--gatekeepers", "1", "--cores", "1", "--pushes", "1",
                               "--workers", "1", "--schedulers", "0")
    with trio.fail_after(TEST_BOUND):
        proc = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            lines = await read_until(proc, "cluster ready")
            described = json.loads(next(line for line in lines if line.startswith("cluster: "))[len("cluster: "):])
            assert any(line.startswith("redis url: redis+sentinel://") for line in lines)
            assert sum(line.startswith("redis sentinel: ") for line in lines) == 3
            assert any(line.startswith("director key: dk_") for line in lines)
            listeners = [parse_listening_line(line) for line in lines]
            gatekeeper = next(url for name, url in filter(None, listeners) if name.endswith(" gatekeeper"))
            async with httpx.AsyncClient(timeout=10) as http:
                status = (await http.get(f"{gatekeeper}/v1/status")).json()
            assert status["nodes"]["core"] == 1 and status["nodes"]["push"] == 1

            warmup = await trio.to_thread.run_sync(lambda: run_cli(
                "warmup", "--gatekeeper", gatekeeper, "--clients", "20", "--seconds", "1", "--hold", "0.5"))
            assert warmup.returncode == 0, warmup.stderr
            figures = json.loads(warmup.stdout.splitlines()[-1])
            assert figures["admitted"] == 20 and figures["errors"] == 0, figures
            assert figures["push_ms"]["p50"] is not None and figures["core_ms"]["p50"] is not None

            proc.send_signal(signal.SIGINT)
            assert await proc.wait() == 0
        finally:
            if proc.returncode is None:  # a failed assertion: still stop it the documented way
                proc.send_signal(signal.SIGINT)
                with trio.CancelScope(shield=True), trio.move_on_after(STOP_BOUND):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()  # its children are in sessions of their own: this would orphan them
        pids = [p["pid"] for p in described["processes"]]
        assert pids and not [pid for pid in pids if alive(pid)]
        assert not os.path.exists(described["workdir"])


def test_warmup_refuses_what_is_not_a_bounded_warmup() -> None:
    for args in (["--gatekeeper", "ftp://x", "--clients", "1", "--seconds", "1"],
                 ["--gatekeeper", "http://127.0.0.1:9", "--clients", "100000", "--seconds", "1"],
                 ["--gatekeeper", "http://127.0.0.1:9", "--clients", "1", "--seconds", "9999"]):
        result = run_cli("warmup", *args)
        assert result.returncode == 2 and result.stderr.startswith("playtotv warmup: "), result.stderr
