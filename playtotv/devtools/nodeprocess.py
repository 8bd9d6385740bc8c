"""One ``playtotv serve`` subprocess, watched the way an operator would: through its standard output.

The node prints ``<role> listening on <URL>`` for each listener and ``ready`` once every role has
started (api.md "Command line and configuration"); that is all this module relies on, so what it runs
is exactly what a deployment runs. Standard error (the node's log) goes to a file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import deque
from typing import Mapping

import trio

#: A node may take this long to print ``ready``: several Python processes starting at once on a
#: two-core machine take seconds each, and a node waits for Redis with back-off.
READY_TIMEOUT = 60.0
#: Standard output lines kept for error messages.
KEPT_LINES = 50


def playtotv_command(*args: str) -> list[str]:
    """The command that runs ``playtotv <args>`` in a child process: every child is started this way.

    ``-P`` keeps the working directory off the child's ``sys.path``: in a repository checkout its
    ``playtotv/`` is the source tree, which lacks ``roles`` and ``protocol`` (setup.cfg maps them into the
    installed package), and would shadow the installed package. Unlike ``-I``, ``-P`` still honours the
    ``PYTHON*`` environment variables (``PYTHONUNBUFFERED``, which supervisors reading stdout rely on)."""
    return [sys.executable, "-P", "-m", "playtotv.cli", *args]


def child_options() -> dict[str, object]:
    """``open_process`` options for a supervised child: a session of its own, so a Ctrl-C in the terminal
    reaches only the supervisor, which then stops the children in order (drain first).

    (No parent-death signal: trio starts processes from a worker thread, and Linux sends that signal
    when the *thread* that forked exits, which an idle worker thread does after a few seconds.)"""
    return {"start_new_session": True}


class NodeExited(RuntimeError):
    """The process exited before it was ready."""


class RoleProcess:
    def __init__(self, name: str, roles: str, env: Mapping[str, str], log_path: str) -> None:
        self.name = name
        self.roles = roles
        self.env = dict(env)
        self.log_path = log_path
        self.proc: trio.Process | None = None
        self.listening: dict[str, str] = {}
        self.lines: deque[str] = deque(maxlen=KEPT_LINES)
        self.ready = trio.Event()
        self.exited = trio.Event()
        self.returncode: int | None = None
        #: Set by whoever stops or kills the process on purpose: the supervisor does not restart it.
        self.stopped_on_purpose = False
        self.starts = 0

    @property
    def role_list(self) -> list[str]:
        return self.roles.split(",")

    @property
    def alive(self) -> bool:
        return self.proc is not None and not self.exited.is_set()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start(self, nursery: trio.Nursery, *, wait_ready: bool = True) -> "RoleProcess":
        """Start (or start again, after an exit) and, by default, wait until it prints ``ready``."""
        self.listening = {}
        self.ready = trio.Event()
        self.exited = trio.Event()
        self.returncode = None
        self.stopped_on_purpose = False
        self.starts += 1
        command = playtotv_command("serve", "--role", self.roles)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log_path, "ab") as log:
            self.proc = await trio.lowlevel.open_process(
                command, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env=env,
                **child_options(),
            )
        nursery.start_soon(self._read_stdout, self.proc, self.ready, self.exited)
        if wait_ready:
            with trio.fail_after(READY_TIMEOUT):
                await self.wait_ready()
        return self

    async def wait_ready(self) -> None:
        async with trio.open_nursery() as nursery:
            async def fail_on_exit() -> None:
                await self.exited.wait()
                # First line: the log's last line, which says why (a refused setting is one line).
                raise NodeExited(f"{self.name} exited with {self.returncode} before ready: {self.log_tail(1)} "
                                 f"(log: {self.log_path})\n{self.log_tail()}")

            nursery.start_soon(fail_on_exit)
            await self.ready.wait()
            nursery.cancel_scope.cancel()

    def log_tail(self, lines: int = 15) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 8192))
                return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def _read_stdout(self, proc: trio.Process, ready: trio.Event, exited: trio.Event) -> None:
        assert proc.stdout is not None
        buffer = b""
        async for chunk in proc.stdout:
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for raw in complete:
                line = raw.decode(errors="replace").strip()
                self.lines.append(line)
                if " listening on " in line:
                    role, _, url = line.partition(" listening on ")
                    self.listening[role] = url
                elif line == "ready":
                    ready.set()
        self.returncode = await proc.wait()
        exited.set()

    def send_signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(sig)

    async def _wait_exit(self) -> None:
        # Waits on the process itself, not on ``exited``: the output reader may already be cancelled
        # (a cluster being torn down), and the caller still needs to know the process is gone.
        assert self.proc is not None
        self.returncode = await self.proc.wait()
        self.exited.set()

    async def kill(self) -> None:
        """SIGKILL (no drain, nothing acknowledged) and wait until it is gone."""
        self.stopped_on_purpose = True
        self.send_signal(signal.SIGKILL)
        if self.proc is not None:
            await self._wait_exit()

    async def terminate(self, timeout: float) -> int | None:
        """SIGTERM (the node drains), SIGKILL after ``timeout``; the exit status."""
        self.stopped_on_purpose = True
        if self.proc is None:
            return None
        self.send_signal(signal.SIGTERM)
        with trio.move_on_after(timeout):
            await self._wait_exit()
            return self.returncode
        self.send_signal(signal.SIGKILL)
        await self._wait_exit()
        return self.returncode
