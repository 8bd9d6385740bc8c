"""Starting a node as an operator does: what it says on a terminal, and how it refuses what cannot work."""

from __future__ import annotations

import os
import socket
import stat

import httpx
import pytest
import trio

from playtotv.registry import open_registry
from playtotv.devtools.nodeprocess import NodeProcess
from tests.nodes import PORT0, run_cli

pytestmark = pytest.mark.slow

CLUSTER = {"PLAYTOTV_AUTH_SECRET": "test-secret-0123456789", "PLAYTOTV_AUTH_DIRECTOR_KEYS": "dk_test_director_key"}
TEST_BOUND = 60.0


# -- logs ------------------------------------------------------------------------------------------------
async def wait_for_a_probe(redis_url: str) -> None:
    """Until the scheduler has probed core over HTTP (httpx) and scripts have run in Redis (coredis)."""
    async with open_registry(redis_url) as registry:
        while not any("probe_core_rtt_ms" in node.qos for node in await registry.nodes()):
            await trio.sleep(0.2)


async def run_and_read_log(tmp_path, redis_url: str, nursery: trio.Nursery, *args: str) -> list[str]:
    log = tmp_path / "node.log"
    env = {**PORT0, **CLUSTER, "PLAYTOTV_REDIS_URL": redis_url}
    node = await NodeProcess("all", env=env, args=list(args), log_path=str(log)).start(nursery)
    with trio.fail_after(TEST_BOUND):
        await wait_for_a_probe(redis_url)
    assert await node.terminate() == 0
    return log.read_text().splitlines()


async def test_libraries_log_only_warnings(tmp_path, redis_url, nursery):
    lines = await run_and_read_log(tmp_path, redis_url, nursery)
    assert any(" info    playtotv." in line for line in lines), lines  # our own info lines stay
    noisy = [line for line in lines if " playtotv." not in line]
    assert noisy == [], noisy  # httpx (each probe), coredis (NOSCRIPT retries), hypercorn, ...


async def test_log_level_warning_keeps_only_warnings_and_errors(tmp_path, redis_url, nursery):
    lines = await run_and_read_log(tmp_path, redis_url, nursery, "--log-level", "warning")
    assert [line for line in lines if line.split()[1:2] in (["debug"], ["info"])] == []


def test_log_level_is_checked():
    out = run_cli("serve", "--log-level", "loud")
    assert out.returncode == 2 and "--log-level" in out.stderr and len(out.stderr.splitlines()) == 1


# -- listener addresses ---------------------------------------------------------------------------------
BINDS = [
    ("all", "PLAYTOTV_GATEKEEPER_BIND", "gatekeeper.bind"),
    ("all", "PLAYTOTV_CORE_BIND", "core.bind"),
    ("all", "PLAYTOTV_PUSH_BIND", "push.bind"),
    ("all", "PLAYTOTV_PUSH_POLLING_BIND", "push.polling_bind"),
    ("worker", "PLAYTOTV_NODE_OPS_BIND", "node.ops_bind"),
]


@pytest.mark.parametrize(("roles", "variable", "setting"), BINDS)
def test_a_port_in_use_is_one_line_naming_setting_address_and_fix(roles, variable, setting):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        # A Redis that is not there: the address is checked before waiting for any dependency.
        env = {**PORT0, **CLUSTER, variable: address, **(
            {"PLAYTOTV_REDIS_URL": "redis://127.0.0.1:1/0"} if roles != "all" else {})}
        out = run_cli("serve", "--role", roles, env=env)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"playtotv: {setting} {address} is in use; set {variable} or --config"], out.stderr


def test_two_listeners_on_one_address_are_refused():
    env = {**PORT0, "PLAYTOTV_CORE_BIND": "127.0.0.1:18471", "PLAYTOTV_PUSH_BIND": "127.0.0.1:18471"}
    out = run_cli("serve", env=env)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "playtotv: push.bind 127.0.0.1:18471 is also core.bind; set PLAYTOTV_PUSH_BIND or --config"]


# -- embedded keys across restarts ------------------------------------------------------------------------
def embedded_env(store: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYTOTV_AUTH_")}
    return {**env, **PORT0, "PLAYTOTV_STORE_URL": f"sqlite:///{store}"}


async def test_a_restarted_embedded_node_keeps_its_tickets_and_director_key(tmp_path, nursery):
    store = tmp_path / "play.db"
    keys = tmp_path / "play.db.keys"
    first = NodeProcess("all", env=embedded_env(str(store)), log_path=str(tmp_path / "first.log"))
    await first.start(nursery)
    assert first.director_key and first.director_key.startswith("dk_")
    async with httpx.AsyncClient(timeout=10) as http:
        session = (await http.post(f"{first.listening['gatekeeper']}/v1/session", json={})).json()
        auth = {"Authorization": f"Bearer {session['ticket']}"}
        me = await http.get(f"{first.listening['core']}/v1/me", headers=auth)
        assert me.status_code == 200 and me.json()["user_id"] == session["user_id"]
        assert await first.terminate() == 0
        assert stat.S_IMODE(keys.stat().st_mode) == 0o600
        said = [line for line in (tmp_path / "first.log").read_text().splitlines() if str(keys) in line]
        assert len(said) == 1 and "generated" in said[0], said

        second = await NodeProcess("all", env=embedded_env(str(store))).start(nursery)
        assert second.director_key == first.director_key
        me = await http.get(f"{second.listening['core']}/v1/me", headers=auth)
        assert me.status_code == 200 and me.json()["user_id"] == session["user_id"]
        director = {"Authorization": f"Bearer {second.director_key}"}
        show = await http.post(f"{second.listening['core']}/v1/shows", json={"title": "After"}, headers=director)
        assert show.is_success, show.text
        assert await second.terminate() == 0
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600


def test_an_unreadable_keys_file_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "play.db.keys").write_text("not json")
    out = run_cli("serve", env=embedded_env(str(tmp_path / "play.db")))
    assert out.returncode == 2
    [line] = out.stderr.splitlines()
    assert line.startswith(f"playtotv: {tmp_path / 'play.db.keys'}: not a valid keys file"), line


def test_short_director_keys_are_refused_before_waiting_for_redis():
    env = {**PORT0, **CLUSTER, "PLAYTOTV_REDIS_URL": "redis://127.0.0.1:1/0",
           "PLAYTOTV_AUTH_DIRECTOR_KEYS": "dk_long_enough_key_1,abc"}
    out = run_cli("serve", "--role", "core", env=env, timeout=10)
    assert out.returncode == 2
    assert out.stderr.splitlines() == ["playtotv: auth.director_keys: every key must be at least 16 characters "
                                       "(see playtotv.credentials.generate_director_key)"]
