"""The ``playtotv`` command (docs/api.md §7).

    playtotv serve [--role ROLES] [--config FILE] [--log-format text|json]
                   [--log-level debug|info|warning|error]
    playtotv schema [push|openapi]
    playtotv cluster up [--gatekeepers N --cores N --pushes N --workers N --schedulers N --store URL
                         --base-port P]                      (a local multi-process cluster: playtotv.devtools.cluster)
    playtotv warmup --gatekeeper URL --clients N --seconds S  (ramp synthetic sessions: playtotv.devtools.warmup)
    playtotv plan --viewers N [--answer-share S --answer-window W --slo S] [--calibration FILE] [--json]
                                                             (processes, Redis and store for a show: playtotv.plan)
    playtotv --version

Wrong input exits with status 2 and one line naming the key and the problem, never a traceback.
Standard output carries exactly the lines a supervisor or test waits for: ``<role> listening on <URL>``,
``director key: <key>`` (embedded only, when none was configured) and ``ready``; logs go to stderr.
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Iterator, Sequence
from typing import NoReturn

import msgspec
import trio

from playtotv import __version__
from playtotv.logs import LOG_LEVELS
from playtotv.settings import ConfigError, check_deployment, load_settings, parse_roles

EXIT_USAGE = 2

#: The standard output lines of ``playtotv serve`` that supervisors and tests wait for. Whatever reads
#: them uses ``parse_listening_line`` and these constants, so the printer and the readers cannot drift.
LISTENING = " listening on "
READY_LINE = "ready"
DIRECTOR_KEY_PREFIX = "director key: "


def listening_line(name: str, url: str) -> str:
    """``<name> listening on <URL>``: one line per listener (``name`` is the listener, such as ``core``)."""
    return f"{name}{LISTENING}{url}"


def parse_listening_line(line: str) -> tuple[str, str] | None:
    """``(name, url)`` of a ``<name> listening on <URL>`` line, None for any other line. ``name`` is all
    that precedes the marker (``playtotv cluster up`` prints ``<process> <listener>``)."""
    name, marker, url = line.strip().partition(LISTENING)
    return (name, url) if marker and name and url else None


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"playtotv: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="playtotv", description="PlayToTV play-along TV platform")
    parser.add_argument("--version", action="version", version=f"playtotv {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_OneLineParser)
    serve = sub.add_parser("serve", help="run one or more roles (default: all, on embedded defaults)")
    serve.add_argument("--role", default="all", help="comma-separated: gatekeeper,core,push,worker,scheduler or all")
    serve.add_argument("--config", default=None, help="TOML configuration file")
    serve.add_argument("--log-format", choices=("text", "json"), default="text")
    serve.add_argument("--log-level", choices=LOG_LEVELS, default="info",
                       help="least severe level logged (default info; other libraries log warnings and up "
                            "unless debug)")
    schema = sub.add_parser("schema", help="print the JSON Schema of push messages or the OpenAPI document")
    schema.add_argument("which", nargs="?", choices=("push", "openapi"), default="openapi")
    from playtotv.devtools import cluster, warmup

    cluster.add_arguments(sub.add_parser("cluster", help="run a local cluster of separate processes"))
    warmup.add_arguments(sub.add_parser("warmup", help="ramp synthetic sessions through a gatekeeper"))
    from playtotv import plan

    plan.add_arguments(sub.add_parser("plan", help="processes, Redis and store a show of N viewers needs"))
    return parser


def _say(line: str) -> None:
    print(line, flush=True)


def _announce_listener(role: str, url: str) -> None:
    _say(listening_line(role, url))
    if role == "core":
        _say(f"director console: {url}/console  viewer page: {url}/play")


def _refuse(problem: object) -> int:
    print(f"playtotv: {problem}", file=sys.stderr)
    return EXIT_USAGE


def serve(args: argparse.Namespace) -> int:
    from playtotv.binds import check_binds
    from playtotv.logs import setup_logging
    from playtotv.node import run_node

    try:
        roles = parse_roles(args.role)
        settings = load_settings(args.config)
        check_deployment(settings, roles)
        check_binds(settings, roles)
    except ConfigError as e:
        return _refuse(e)
    setup_logging(args.log_format, args.log_level)

    async def main() -> None:
        await run_node(
            settings, roles,
            on_listening=_announce_listener,
            on_director_key=lambda key: _say(f"{DIRECTOR_KEY_PREFIX}{key}"),
            on_ready=lambda: _say(READY_LINE),
            # Only a serving process paces its collections (tests keep CPython's defaults), and only
            # where a collection's stall delays deliveries: see playtotv.gcpacer.
            pace_collections="push" in roles,
        )

    try:
        trio.run(main)
    except KeyboardInterrupt:  # a second Ctrl-C during drain: stop now, still a clean exit
        pass
    except (ConfigError, OSError, BaseExceptionGroup) as error:
        problem = _start_failure(error)
        if problem is None:
            raise
        return _refuse(problem)
    return 0


def _start_failure(error: BaseException) -> str | None:
    """The one line for a node that could not start: a configuration error found while starting (a keys
    file, a role's own check), or a listener address in use although ``check_binds`` found it free (taken
    meanwhile). None: anything else, which keeps its traceback."""
    from playtotv.binds import bind_error_message

    leaves = list(_leaves(error))
    for e in leaves:
        if isinstance(e, ConfigError):
            return str(e)
    for e in leaves:
        if isinstance(e, OSError) and e.errno == errno.EADDRINUSE:
            return bind_error_message(e)
    return None


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


def print_schema(which: str) -> int:
    from playtotv.protocol.contract import openapi_document, push_json_schema

    doc = push_json_schema() if which == "push" else openapi_document()
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(doc)).decode() + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "schema":
        return print_schema(args.which)
    if args.command == "cluster":
        from playtotv.devtools import cluster

        return cluster.run_cli(args)
    if args.command == "warmup":
        from playtotv.devtools import warmup

        return warmup.run_cli(args)
    if args.command == "plan":
        from playtotv import plan

        return plan.run_cli(args)
    _parser().print_help()
    return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
