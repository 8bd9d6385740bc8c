"""The addresses a node will listen on, checked before it starts.

A listener that cannot bind would otherwise surface as a traceback from deep inside the server, long after
start-up began. Each address is bound once here (then closed) so that a port in use, an address that is
not this machine's or a port that needs privileges is refused up front as a configuration error: one line
naming the setting, the address and how to change it, exit status 2.
"""

from __future__ import annotations

import errno
import socket

from playtotv.settings import ConfigError, Settings, split_bind

#: Listener settings and the role that opens each (``node.ops_bind`` belongs to every process that sets it).
ROLE_LISTENERS = (
    ("gatekeeper", "gatekeeper", "bind"),
    ("core", "core", "bind"),
    ("push", "push", "bind"),
    ("push", "push", "polling_bind"),
)


def listener_binds(settings: Settings, roles: list[str]) -> list[tuple[str, str]]:
    """``(setting, HOST:PORT)`` of every listener a node running ``roles`` opens."""
    binds = [(f"{section}.{key}", getattr(getattr(settings, section), key))
             for role, section, key in ROLE_LISTENERS if role in roles]
    if settings.node.ops_bind is not None:
        binds.append(("node.ops_bind", settings.node.ops_bind))
    return binds


def how_to_change(setting: str) -> str:
    return f"set PLAYTOTV_{setting.replace('.', '_').upper()} or --config"


def check_binds(settings: Settings, roles: list[str]) -> None:
    """Raise ``ConfigError`` for the first listener address that cannot be bound."""
    taken: dict[tuple[str, int], str] = {}
    probes: list[socket.socket] = []
    try:
        for setting, bind in listener_binds(settings, roles):
            host, port = split_bind(bind)
            if port and (host, port) in taken:
                raise ConfigError(f"{setting} {bind} is also {taken[host, port]}; {how_to_change(setting)}")
            taken[host, port] = setting
            try:
                probes += _bind_all(host, port)
            except socket.gaierror:
                raise ConfigError(f"{setting} {bind}: unknown host; {how_to_change(setting)}") from None
            except OSError as e:
                raise ConfigError(f"{setting} {bind} {_problem(e)}; {how_to_change(setting)}") from None
    finally:
        for probe in probes:
            probe.close()


def bind_error_message(error: OSError) -> str:
    """One line for a listener that failed to bind after the check (another process took the port
    meanwhile); the server's error does not say which address it was."""
    return f"a listener address {_problem(error)} ({error.strerror or error}); set the *_BIND settings or --config"


def _problem(error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return "is in use"
    if error.errno == errno.EADDRNOTAVAIL:
        return "is not an address of this machine"
    if error.errno == errno.EACCES:
        return "needs privileges (ports below 1024)"
    return f"cannot be bound ({error.strerror or error})"


def _bind_all(host: str, port: int) -> list[socket.socket]:
    """Bind every address ``host`` resolves to, as the servers do (SO_REUSEADDR, IPv6 sockets IPv6 only)."""
    bound: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
            sock = socket.socket(family, kind, proto)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except BaseException:
        for sock in bound:
            sock.close()
        raise
    return bound
