"""Bound every test of a module: ``bound_every_test(globals(), seconds)`` at the end of the module.

pytest-trio runs fixtures in tasks of their own, so a cancel scope in a fixture would not cover the test:
each ``async def test_*`` is wrapped in ``trio.fail_after`` instead (docs/architecture.md §8).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import trio


def bounded(test: Callable[..., Awaitable[Any]], seconds: float) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(test)  # the same signature: pytest still sees the fixtures the test asks for
    async def run(*args: Any, **kwargs: Any) -> Any:
        with trio.fail_after(seconds):
            return await test(*args, **kwargs)

    return run


def bound_every_test(namespace: dict[str, Any], seconds: float) -> None:
    for name, test in list(namespace.items()):
        if name.startswith("test_") and inspect.iscoroutinefunction(test):
            namespace[name] = bounded(test, seconds)
