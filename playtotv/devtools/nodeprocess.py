"""One ``playtotv serve`` subprocess, watched the way an operator would: through its standard output.

The node prints ``<role> listening on <URL>`` for each listener, ``director key: <key>`` when it made one
up, and ``ready`` once every role has started (``playtotv.cli`` prints and parses these lines); that is
all this module relies on, so what it runs is exactly what a deployment runs. Standard error (the node's
log) goes to a file, or nowhere.

``NodeProcess`` is the one way the cluster, the tests and the benchmarks start a node (and, with
``command=``, a benchmark's own server that prints the same lines).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import trio

from playtotv.cli import DIRECTOR_KEY_PREFIX, READY_LINE, parse_listening_line

#: A node may take this long to print ``ready``: several Python processes starting at once on a
#: two-core machine take seconds each, and a node waits for Redis with back-off.
READY_TIMEOUT = 60.0
#: Standard output lines kept for error messages.
KEPT_LINES = 50
#: A node gets this long to drain after SIGTERM before ``terminate`` kills it.
STOP_TIMEOUT = 20.0
#: How long a process being killed on cancellation may take to be reaped.
REAP_TIMEOUT = 5.0


def playtotv_command(*args: str) -> list[str]:
    """The command that runs ``playtotv <args>`` in a child process: every child is started this way.

    ``-P`` keeps the working directory off the child's ``sys.path``: in a repository checkout its
    ``playtotv/`` is the source tree, which lacks ``roles`` and ``protocol`` (setup.cfg maps them into the
    installed package), and would shadow the installed package. Unlike ``-I``, ``-P`` still honours the
    ``PYTHON*`` environment variables (``PYTHONUNBUFFERED``, which supervisors reading stdout rely on)."""
    return [sys.executable, "-P", "-m", "playtotv.cli", *args]


def child_options() -> dict[str, Any]:
    """``open_process`` options for a supervised child: a session of its own, so a Ctrl-C in the terminal
    reaches only the supervisor, which then stops the children in order (drain first).

    (No parent-death signal: trio starts processes from a worker thread, and Linux sends that signal
    when the *thread* that forked exits, which an idle worker thread does after a few seconds.)"""
    return {"start_new_session": True}


class NodeExited(RuntimeError):
    """The process exited before it was ready."""


class NodeProcess:
    """``playtotv serve --role <roles> <args>`` (or ``command``), with ``env`` over this process's environment.

    ``start(nursery)`` reads the output in the background for the life of the process: ``listening``,
    ``director_key``, ``exited`` and ``returncode`` stay current, and when that nursery is cancelled (a
    test that ends, failed or not) a process still running is killed, so it cannot hold its ports after.
    ``start()`` without a nursery reads only until ``ready`` (a benchmark's servers print nothing after).
    """

    def __init__(self, roles: str = "all", env: Mapping[str, str] | None = None, *, name: str | None = None,
                 args: Sequence[str] = (), log_path: str | None = None, command: Sequence[str] | None = None) -> None:
        self.name = name or roles.replace(",", "_")
        self.roles = roles
        self.env = dict(env or {})
        self.args = list(args)
        self.command = list(command) if command is not None else None
        #: Where the node's standard error (its log) goes; None: only its last lines are kept
        #: (``stderr_tail``), so that a node that exits before ready still says why.
        self.log_path = log_path
        self.stderr_tail: deque[str] = deque(maxlen=KEPT_LINES)
        self._stderr_read = trio.Event()
        self.proc: trio.Process | None = None
        self.listening: dict[str, str] = {}
        self.director_key: str | None = None
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

    async def start(self, nursery: trio.Nursery | None = None, *, wait_ready: bool = True) -> NodeProcess:
        """Start (or start again, after an exit) and, by default, wait until it prints ``ready``
        (``READY_TIMEOUT``; ``NodeExited`` if it exits first)."""
        self.listening = {}
        self.ready = trio.Event()
        self.exited = trio.Event()
        self.returncode = None
        self.stopped_on_purpose = False
        self.starts += 1
        command = self.command or playtotv_command("serve", "--role", self.roles, *self.args)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        # Watched for its whole life (a nursery), it gets a session of its own and is stopped by us; read
        # only until ready, it stays in our process group, so a Ctrl-C stops it with us.
        options = {"stdin": subprocess.DEVNULL, "env": env, **(child_options() if nursery is not None else {})}
        self.stderr_tail.clear()
        self._stderr_read = trio.Event()
        if self.log_path is not None:
            with open(self.log_path, "ab") as log:  # noqa: ASYNC230 - a local file, opened once per start
                self.proc = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, stderr=log, **options)
        elif nursery is not None:
            self.proc = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                         **options)
            nursery.start_soon(self._read_stderr, self.proc, self._stderr_read)
        else:
            self.proc = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                                         **options)
        if nursery is None:
            with trio.fail_after(READY_TIMEOUT):
                await self._read_stdout(self.proc, self.ready, self.exited, until_ready=True)
            return self
        nursery.start_soon(self._read_stdout, self.proc, self.ready, self.exited)
        if wait_ready:
            with trio.fail_after(READY_TIMEOUT):
                await self.wait_ready()
        return self

    async def wait_ready(self) -> None:
        """Until ``ready``; ``NodeExited`` (never wrapped in a group) if the process exits first."""
        ready, exited = self.ready, self.exited

        async def until(event: trio.Event, scope: trio.CancelScope) -> None:
            await event.wait()
            scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(until, ready, nursery.cancel_scope)
            nursery.start_soon(until, exited, nursery.cancel_scope)
        if not ready.is_set():
            if self.log_path is None:  # its last words may still be in the pipe
                with trio.move_on_after(1.0):
                    await self._stderr_read.wait()
            raise self._exited_error()

    def _exited_error(self) -> NodeExited:
        # First line: the log's last line, which says why (a refused setting is one line).
        if self.log_path is None:
            last = self.stderr_tail[-1] if self.stderr_tail else "(no output on stderr)"
            return NodeExited(f"{self.name} exited with {self.returncode} before ready: {last}\n"
                              + "\n".join(self.stderr_tail))
        return NodeExited(f"{self.name} exited with {self.returncode} before ready: {self.log_tail(1)} "
                          f"(log: {self.log_path})\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        if self.log_path is None:
            return "(no log)"
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 8192))
                return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _take(self, line: str) -> None:
        self.lines.append(line)
        listener = parse_listening_line(line)
        if listener is not None:
            self.listening[listener[0]] = listener[1]
        elif line.startswith(DIRECTOR_KEY_PREFIX):
            self.director_key = line.removeprefix(DIRECTOR_KEY_PREFIX)

    async def _read_stdout(self, proc: trio.Process, ready: trio.Event, exited: trio.Event, *,
                           until_ready: bool = False) -> None:
        # ``proc``, ``ready`` and ``exited`` are this start's own: after a restart, the old reader must
        # not touch the new process's events.
        assert proc.stdout is not None
        buffer = b""
        try:
            async for chunk in proc.stdout:
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for raw in complete:
                    line = raw.decode(errors="replace").strip()
                    if line == READY_LINE:
                        ready.set()
                        if until_ready:
                            return
                    else:
                        self._take(line)
            self.returncode = await proc.wait()
            exited.set()
            if until_ready:
                raise self._exited_error()
        finally:
            if not until_ready and proc.returncode is None:
                proc.kill()
                with trio.CancelScope(shield=True), trio.move_on_after(REAP_TIMEOUT):
                    await proc.wait()

    async def _read_stderr(self, proc: trio.Process, done: trio.Event) -> None:
        assert proc.stderr is not None
        buffer = b""
        async for chunk in proc.stderr:
            *complete, buffer = (buffer + chunk).split(b"\n")
            self.stderr_tail.extend(raw.decode(errors="replace").rstrip() for raw in complete)
        if buffer:
            self.stderr_tail.append(buffer.decode(errors="replace").rstrip())
        done.set()

    def send_signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(sig)

    async def wait_exited(self) -> int | None:
        """Until the process is gone; its exit status. Waits on the process itself, not on ``exited``:
        the output reader may already be cancelled (a cluster being torn down, or no reader at all)."""
        if self.proc is None:
            return None
        self.returncode = await self.proc.wait()
        self.exited.set()
        return self.returncode

    def kill(self) -> None:
        """SIGKILL (a crash: no drain, nothing acknowledged); ``wait_exited`` to know it is gone."""
        self.stopped_on_purpose = True
        self.send_signal(signal.SIGKILL)

    async def terminate(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM (the node drains), SIGKILL after ``timeout``; the exit status."""
        self.stopped_on_purpose = True
        if self.proc is None:
            return None
        self.send_signal(signal.SIGTERM)
        with trio.move_on_after(timeout):
            return await self.wait_exited()
        self.send_signal(signal.SIGKILL)
        return await self.wait_exited()
