from __future__ import annotations

import pytest

from playtotv.devtools.localredis import query_blocking
from tests.redis_server import RedisServer

#: Fixtures that start a redis-server: a test that uses one is ``slow`` (``pytest -m "not slow"`` skips it).
REDIS_FIXTURES = frozenset({"redis_server_session", "redis_url", "redis_server"})


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if REDIS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def redis_server_session():
    """One Redis for tests that do not disturb it (each test uses its own key space via flush)."""
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server_session: RedisServer) -> str:
    """A clean database on the shared test Redis."""
    assert query_blocking(redis_server_session.port, "FLUSHALL") == b"OK"
    return redis_server_session.url


@pytest.fixture
def redis_server():
    """A Redis of the test's own, which the test may kill or restart."""
    server = RedisServer().start()
    yield server
    server.close()
