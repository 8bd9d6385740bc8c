"""The ``playtotv`` command as an operator uses it: real processes, real ports, real signals."""

from __future__ import annotations

import signal

import httpx
import pytest
import trio

from playtotv import __version__
from playtotv.devtools.nodeprocess import NodeProcess
from tests.nodes import PORT0, run_cli
from tests.redis_server import RedisServer, free_port

#: Every test runs the ``playtotv`` command as a subprocess.
pytestmark = pytest.mark.slow

CLUSTER = {"PLAYTOTV_AUTH_SECRET": "test-secret-0123456789", "PLAYTOTV_AUTH_DIRECTOR_KEYS": "dk_test_director_key"}


def test_version():
    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"playtotv {__version__}"


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["serve", "--role", "core,director"], {}, "unknown role 'director'"),
        (["serve"], {"PLAYTOTV_GATEKEEPER_LICENSED_CAPACITY": "lots"}, "gatekeeper.licensed_capacity"),
        (["serve"], {"PLAYTOTV_CORE_BIND": "nowhere"}, "core.bind"),
        (["serve", "--config", "/nonexistent/playtotv.toml"], {}, "--config"),
        (["serve", "--role", "core"], {}, "redis.url"),
        (["serve", "--role", "push"], {"PLAYTOTV_REDIS_URL": "redis://127.0.0.1:1/0"}, "auth.secret"),
        (["serve", "--log-format", "xml"], {}, "--log-format"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, env, needle):
    out = run_cli(*args, env=env)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.stderr
    assert "Traceback" not in out.stderr


async def _check_ops(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        assert (await http.get("/healthz")).status_code == 200
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        metrics = await http.get("/metrics")
        assert metrics.status_code == 200
        assert "playtotv_http_requests" in metrics.text


async def test_embedded_platform_serves_health_everywhere_and_exits_0_on_sigterm(nursery):
    node = await NodeProcess("all", env=PORT0).start(nursery)
    assert set(node.listening) >= {"gatekeeper", "core", "push", "push-polling"}
    assert node.director_key
    for role, url in node.listening.items():
        if url.startswith("http"):
            await _check_ops(url)
    assert await node.terminate() == 0


async def test_sigint_drains_too(nursery):
    node = await NodeProcess("all", env=PORT0).start(nursery)
    node.send_signal(signal.SIGINT)
    with trio.fail_after(20):
        await node.exited.wait()
    assert node.returncode == 0


@pytest.mark.parametrize("role", ["gatekeeper", "core", "push", "worker", "scheduler"])
async def test_each_role_alone_on_redis_registers(role, redis_url, nursery):
    ops = free_port()
    env = {**PORT0, **CLUSTER, "PLAYTOTV_REDIS_URL": redis_url, "PLAYTOTV_NODE_OPS_BIND": f"127.0.0.1:{ops}",
           "PLAYTOTV_NODE_ID": f"test-{role}"}
    node = await NodeProcess(role, env=env).start(nursery)
    await _check_ops(f"http://127.0.0.1:{ops}")
    from playtotv.registry import open_registry

    async with open_registry(redis_url) as registry:
        nodes = {n.id: n for n in await registry.nodes()}
        assert role in nodes[f"test-{role}"].roles
        assert await node.terminate() == 0
        assert f"test-{role}" not in {n.id for n in await registry.nodes()}  # deregistered on drain


async def test_redis_down_at_start_waits_not_ready_then_recovers(nursery):
    """docs/reliability.md #19: no crash loop; /readyz says 503 until Redis appears, then 200 without a restart."""
    port, ops = free_port(), free_port()
    env = {**PORT0, **CLUSTER, "PLAYTOTV_REDIS_URL": f"redis://127.0.0.1:{port}/0",
           "PLAYTOTV_NODE_OPS_BIND": f"127.0.0.1:{ops}"}
    node = await NodeProcess("worker", env=env).start(nursery, wait_ready=False)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ops}", timeout=5) as http:
        with trio.fail_after(20):
            while True:
                try:
                    r = await http.get("/readyz")
                    break
                except httpx.TransportError:
                    await trio.sleep(0.1)
        assert r.status_code == 503
        assert (await http.get("/healthz")).status_code == 200
        assert not node.ready.is_set() and not node.exited.is_set()
        redis = RedisServer(port=port).start()
        try:
            with trio.fail_after(20):
                await node.ready.wait()
                while (await http.get("/readyz")).status_code != 200:
                    await trio.sleep(0.1)
        finally:
            assert await node.terminate() == 0
            redis.close()
