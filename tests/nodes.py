"""Start ``playtotv serve`` as a real subprocess and talk to it like an operator would.

``NodeProcess`` reads the node's stdout (``<role> listening on <URL>``, ``director key: ...``, ``ready``),
so tests know its real ports (port 0 everywhere) and when it is ready; ``terminate()`` sends SIGTERM and
returns the exit status.
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Mapping

import trio

from playtotv.devtools.nodeprocess import playtotv_command

#: How long a node may take to print ``ready`` on a loaded CI machine.
READY_TIMEOUT = 30.0


class NodeProcess:
    def __init__(self, roles: str = "all", env: Mapping[str, str] | None = None, args: list[str] | None = None,
                 log_path: str | None = None):
        self.roles = roles
        #: Where the node's standard error (its log) goes; by default nowhere.
        self.log_path = log_path
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.args = args or []
        self.listening: dict[str, str] = {}
        self.director_key: str | None = None
        self.lines: list[str] = []
        self.ready = trio.Event()
        self.exited = trio.Event()
        self.proc: trio.Process | None = None
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, nursery: trio.Nursery, *, wait_ready: bool = True) -> "NodeProcess":
        cmd = playtotv_command("serve", "--role", self.roles, *self.args)
        if self.log_path is None:
            self.proc = await trio.lowlevel.open_process(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=self.env)
        else:
            with open(self.log_path, "ab") as log:
                self.proc = await trio.lowlevel.open_process(cmd, stdout=subprocess.PIPE, stderr=log, env=self.env)
        nursery.start_soon(self._read_stdout)
        if wait_ready:
            with trio.fail_after(READY_TIMEOUT):
                await self.wait_ready()
        return self

    async def wait_ready(self) -> None:
        async with trio.open_nursery() as n:
            async def exited() -> None:
                await self.exited.wait()
                raise RuntimeError(f"node exited with {self.returncode} before ready: {self.lines[-5:]}")

            n.start_soon(exited)
            await self.ready.wait()
            n.cancel_scope.cancel()

    async def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        buffer = b""
        try:
            async for chunk in self.proc.stdout:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace").strip()
                    self.lines.append(line)
                    if " listening on " in line:
                        role, _, url = line.partition(" listening on ")
                        self.listening[role] = url
                    elif line.startswith("director key: "):
                        self.director_key = line.removeprefix("director key: ")
                    elif line == "ready":
                        self.ready.set()
            self.returncode = await self.proc.wait()
            self.exited.set()
        finally:
            # The test's nursery is cancelled when the test ends, failed checks included: a node still
            # running then would go on serving (and holding its ports) after the test.
            if self.proc.returncode is None:
                self.proc.kill()
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await self.proc.wait()

    def send_signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    async def terminate(self, timeout: float = 20.0) -> int | None:
        self.send_signal(signal.SIGTERM)
        with trio.fail_after(timeout):
            await self.exited.wait()
        return self.returncode


def run_cli(*args: str, env: Mapping[str, str] | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """A short CLI invocation (``--version``, a refused configuration) run to completion."""
    return subprocess.run(
        playtotv_command(*args), capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )
