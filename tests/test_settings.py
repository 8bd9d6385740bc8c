"""Configuration: TOML + environment overrides, validated; wrong input names the key (docs/api.md)."""

from __future__ import annotations

import pytest

from playtotv.settings import ConfigError, check_deployment, load_settings, parse_roles


def toml_error(tmp_path, text: str) -> str:
    """The message of the ConfigError that loading this TOML (and no environment) raises."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_settings(str(cfg), environ={})
    return str(e.value)


def test_defaults_are_the_documented_ones():
    s = load_settings(None, environ={})
    assert s.redis.url is None and s.embedded
    assert s.store.url == "sqlite:///playtotv.db"
    assert (s.gatekeeper.bind, s.core.bind, s.push.bind, s.push.polling_bind) == (
        "127.0.0.1:8000", "127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003")
    assert s.gatekeeper.licensed_capacity == 100_000
    assert s.node.ops_bind is None


def test_toml_then_environment_override(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[core]\nbind = "127.0.0.1:7001"\n[auth]\ndirector_keys = ["x"]\n')
    env = {"PLAYTOTV_CORE_BIND": "0.0.0.0:9001", "PLAYTOTV_AUTH_DIRECTOR_KEYS": "k1, k2",
           "PLAYTOTV_GATEKEEPER_LICENSED_CAPACITY": "50", "PLAYTOTV_AUTH_TRUST_USER_ID": "true",
           "PLAYTOTV_TEST_MONGODB_URL": "not ours: ignored", "OTHER": "ignored"}
    s = load_settings(str(cfg), environ=env)
    assert s.core.bind == "0.0.0.0:9001"
    assert s.auth.director_keys == ["k1", "k2"]
    assert s.gatekeeper.licensed_capacity == 50
    assert s.auth.trust_user_id is True


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"PLAYTOTV_GATEKEEPER_LICENSED_CAPACITY": "many"}, "gatekeeper.licensed_capacity"),
        ({"PLAYTOTV_GATEKEEPER_LICENSED_CAPACITY": "0"}, "gatekeeper.licensed_capacity"),
        ({"PLAYTOTV_CORE_BIND": "no-port"}, "core.bind"),
        ({"PLAYTOTV_CORE_BINDX": "1"}, "core.bindx"),
        ({"PLAYTOTV_ANSWERS_DURABILITY": "sometimes"}, "answers.durability"),
    ],
)
def test_invalid_value_names_the_key(env, key):
    with pytest.raises(ConfigError) as e:
        load_settings(None, environ=env)
    assert key in str(e.value) and "\n" not in str(e.value)


def test_unknown_key_in_file(tmp_path):
    assert "push.bindd: unknown key" in toml_error(tmp_path, "[push]\nbindd = 1\n")


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(str(tmp_path / "missing.toml"), environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[core\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(str(bad), environ={})


def test_roles():
    assert parse_roles("all") == ["gatekeeper", "core", "push", "worker", "scheduler"]
    assert parse_roles("push,core,core") == ["core", "push"]
    with pytest.raises(ConfigError, match="unknown role 'director'"):
        parse_roles("core,director")


def test_a_role_alone_needs_redis():
    s = load_settings(None, environ={})
    check_deployment(s, parse_roles("all"))
    with pytest.raises(ConfigError, match="redis.url"):
        check_deployment(s, ["core"])
    cluster = load_settings(None, environ={"PLAYTOTV_REDIS_URL": "redis://127.0.0.1:1/0"})
    with pytest.raises(ConfigError, match="auth.secret"):
        check_deployment(cluster, ["core"])
    cluster = load_settings(None, environ={"PLAYTOTV_REDIS_URL": "redis://127.0.0.1:1/0",
                                           "PLAYTOTV_AUTH_SECRET": "a-secret-of-enough-bytes"})
    with pytest.raises(ConfigError, match="auth.director_keys"):
        check_deployment(cluster, ["core"])
    check_deployment(cluster, ["push"])


def test_short_secret_is_refused():
    s = load_settings(None, environ={"PLAYTOTV_REDIS_URL": "redis://127.0.0.1:1/0", "PLAYTOTV_AUTH_SECRET": "short"})
    with pytest.raises(ConfigError, match="auth.secret: must be at least"):
        check_deployment(s, ["push"])


def test_replicated_durability_needs_redis():
    s = load_settings(None, environ={"PLAYTOTV_ANSWERS_DURABILITY": "replicated"})
    with pytest.raises(ConfigError, match="answers.durability"):
        check_deployment(s, parse_roles("all"))


def test_session_limit_networks_are_checked_at_start():
    s = load_settings(None, environ={"PLAYTOTV_GATEKEEPER_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1",
                                     "PLAYTOTV_GATEKEEPER_SESSION_RATE_EXEMPT": "2001:db8::/32"})
    check_deployment(s, parse_roles("all"))
    assert s.gatekeeper.trusted_proxies == ["10.0.0.0/8", "192.0.2.1"] and s.gatekeeper.session_rate == 5.0
    for key in ("TRUSTED_PROXIES", "SESSION_RATE_EXEMPT"):
        bad = load_settings(None, environ={f"PLAYTOTV_GATEKEEPER_{key}": "10.0.0.0/8,the-proxy"})
        with pytest.raises(ConfigError, match=f"gatekeeper.{key.lower()}: 'the-proxy' is not an IP"):
            check_deployment(bad, parse_roles("all"))


def test_an_invalid_choice_lists_the_allowed_values(tmp_path):
    assert toml_error(tmp_path, '[answers]\ndurability = "maybe"\n') == (
        "answers.durability: 'maybe', expected one of queued, replicated, stored")


def test_a_bad_environment_value_names_the_variable_the_value_and_the_type():
    with pytest.raises(ConfigError) as e:
        load_settings(None, environ={"PLAYTOTV_GATEKEEPER_LICENSED_CAPACITY": "abc"})
    assert str(e.value) == ("gatekeeper.licensed_capacity: PLAYTOTV_GATEKEEPER_LICENSED_CAPACITY='abc', "
                            "expected an integer > 0")
    with pytest.raises(ConfigError, match=r"PLAYTOTV_AUTH_TRUST_USER_ID='yes', expected true or false"):
        load_settings(None, environ={"PLAYTOTV_AUTH_TRUST_USER_ID": "yes"})


@pytest.mark.parametrize(("toml", "message"), [
    ('[gatekeeper]\nlicensed_capacity = "100"\n',
     "gatekeeper.licensed_capacity: '100', expected an integer > 0 (a TOML string is not converted: "
     "write it without quotes)"),
    ('[auth]\ntrust_user_id = "true"\n', "auth.trust_user_id: 'true', expected true or false"),
    ('[node]\ndrain_seconds = "3"\n', "node.drain_seconds: '3', expected a number > 0"),
])
def test_a_toml_string_is_not_a_number_or_a_boolean(tmp_path, toml, message):
    assert toml_error(tmp_path, toml).startswith(message)


def test_typed_toml_values_and_environment_strings_are_accepted(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[gatekeeper]\nlicensed_capacity = 100\n[node]\ndrain_seconds = 3\n")
    s = load_settings(str(cfg), environ={"PLAYTOTV_NODE_HEARTBEAT_TTL": "4.5"})
    assert (s.gatekeeper.licensed_capacity, s.node.drain_seconds, s.node.heartbeat_ttl) == (100, 3.0, 4.5)


def test_secret_values_are_never_repeated_in_errors(tmp_path):
    assert toml_error(tmp_path, '[auth]\nprevious_secrets = ["first-secret-value", 12345678901234567]\n') == (
        "auth.previous_secrets[1]: (value not shown), expected a string")


def test_short_director_keys_are_refused_without_showing_them():
    s = load_settings(None, environ={"PLAYTOTV_AUTH_DIRECTOR_KEYS": "dk_long_enough_key_1,abcdefghijklmno"})
    with pytest.raises(ConfigError) as e:
        check_deployment(s, parse_roles("all"))
    assert str(e.value).startswith("auth.director_keys: every key must be at least 16 characters")
    assert "abcdefghijklmno" not in str(e.value)
    check_deployment(load_settings(None, environ={"PLAYTOTV_AUTH_DIRECTOR_KEYS": "abcdefghijklmnop"}),
                     parse_roles("all"))
