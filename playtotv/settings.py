"""Configuration: a TOML file plus ``PLAYTOTV_<SECTION>_<KEY>`` environment overrides, decoded with msgspec.

Every key of docs/api.md §7 exists here with the meaning given there. Unknown
keys are refused (a typo must not silently leave a default in force). Errors are raised as
``ConfigError`` carrying one line that names the key and the problem; the CLI turns it into exit 2.
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Mapping
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec

ROLE_NAMES = ("gatekeeper", "core", "push", "worker", "scheduler")
ENV_PREFIX = "PLAYTOTV_"

Bind = Annotated[str, msgspec.Meta(pattern=r"^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$")]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]


class ConfigError(Exception):
    """Invalid configuration; ``str(err)`` is one line naming the key."""


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class NodeSettings(_Section):
    id: str | None = None  # default: host name + pid
    advertise_host: str | None = None  # default: the bind host (host name when binding 0.0.0.0)
    ops_bind: Bind | None = None
    #: SIGTERM → roles get this long to drain before they are cancelled.
    drain_seconds: PositiveFloat = 10.0
    heartbeat_interval: PositiveFloat = 1.0
    heartbeat_ttl: PositiveFloat = 3.0
    #: HTTP listeners: a request head must arrive within this long of the connection opening (or of its
    #: previous response), its body within this long of the head, and a response must be taken within
    #: this long of its start; past it the connection is closed. Idle keep-alive connections close too.
    request_timeout: PositiveFloat = 30.0
    #: Connections one HTTP listener holds at once; 0: a quarter of the process's open-file limit. More
    #: are closed as soon as they are accepted, so a flood on one listener cannot starve the others.
    max_connections: NonNegativeInt = 0
    #: Connections one client address holds on any listener (WebSocket included); 0: no cap. Keep 0
    #: behind a proxy or load balancer: every connection then comes from its address.
    max_connections_per_address: NonNegativeInt = 0


class RedisSettings(_Section):
    url: str | None = None


class StoreSettings(_Section):
    url: str = "sqlite:///playtotv.db"


class AuthSettings(_Section):
    secret: str | None = None
    #: Earlier secrets still accepted for verification (key rotation), newest first.
    previous_secrets: list[str] = []
    director_keys: list[str] = []
    ticket_ttl: PositiveFloat = 6 * 3600.0
    #: An expired ticket may still be presented as ``resume`` for this long after it expired.
    resume_window: float = 7 * 24 * 3600.0
    #: Trust a bare ``user_id`` in POST /v1/session (only for deployments that authenticate upstream).
    trust_user_id: bool = False


class GatekeeperSettings(_Section):
    bind: Bind = "127.0.0.1:8000"
    licensed_capacity: PositiveInt = 100_000
    max_rtt_ms: PositiveInt = 800
    #: Where the QoS capacity starts; it grows with admissions while every signal is within its SLO.
    qos_initial_capacity: PositiveInt = 1000
    #: At most this many sessions a second per push node are added to the QoS capacity: every newcomer
    #: handshakes at once, and a handshake costs a push node as much CPU as 80-200 deliveries.
    qos_growth_per_push_node: PositiveInt = 50
    slo_fanout_p99_ms: PositiveFloat = 1000.0
    slo_core_p95_ms: PositiveFloat = 200.0
    slo_loop_lag_ms: PositiveFloat = 100.0
    slo_queue_lag_s: PositiveFloat = 5.0
    #: The share of the CPU a node may use that it uses (``playtotv/cpubusy.py``): at 1 it is saturated.
    #: Growth slows as it nears this and stops at 90 % of it (latency signals: at 85 %); a node cannot read
    #: much above 1, so this one brakes growth before the latency cliff and the latency signals back off.
    slo_cpu_busy: PositiveFloat = 1.0
    #: New sessions (``POST /v1/session``) one client address may ask for: a sustained rate per second
    #: and a burst (refused with 429 ``rate_limited``); 0 turns the limit off. IPv6 counts per /64.
    session_rate: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    session_burst: PositiveInt = 30
    #: Addresses or networks (CIDR) never limited: warm-up and load-test hosts.
    session_rate_exempt: list[str] = []
    #: Reverse proxies (addresses or CIDR networks) whose ``X-Forwarded-For`` names the client address.
    trusted_proxies: list[str] = []


class CoreSettings(_Section):
    bind: Bind = "127.0.0.1:8001"
    max_body_bytes: PositiveInt = 16 * 1024
    #: Director bodies that carry a timeline (POST .../episodes) may be up to this large.
    max_director_body_bytes: PositiveInt = 1024 * 1024
    #: Per-user token bucket over viewer requests (every ticket of a user shares it): sustained rate and
    #: burst. A viewer answers once per interaction and reads a few times a second at most; a script
    #: hammering the API is refused (429).
    rate_per_second: PositiveFloat = 10.0
    rate_burst: PositiveInt = 20
    #: Per client address: credentials that are neither a director key nor a genuine ticket (guesses, in
    #: the main). Past the burst, director keys from that address are refused (429) without being compared,
    #: so a key can be guessed at this rate at most; viewers' genuine tickets are still accepted.
    failed_auth_per_second: PositiveFloat = 0.2
    failed_auth_burst: PositiveInt = 10


class PushSettings(_Section):
    bind: Bind = "127.0.0.1:8002"
    polling_bind: Bind = "127.0.0.1:8003"
    max_connections: PositiveInt = 50_000
    #: Bytes an outbox may hold before its client is told to reconnect and dropped.
    max_outbox_bytes: PositiveInt = 1024 * 1024
    max_frame_bytes: PositiveInt = 64 * 1024
    handshake_timeout: PositiveFloat = 10.0
    idle_timeout: PositiveFloat = 90.0
    keepalive_interval: PositiveFloat = 25.0
    recovery_limit: PositiveInt = 300
    #: A channel no local client follows any more stays subscribed this long, so reconnecting clients and
    #: back-to-back long polls find it warm (recent messages in memory, no broker round trip).
    channel_linger: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    #: WebSockets and waiting long polls one user may hold on one node (a few tabs); more are refused (429).
    max_connections_per_user: PositiveInt = 8
    #: A channel's state in the broker (position and history; Redis keys or embedded memory) expires this
    #: long after its last message. Every node applies it when it publishes. A channel idle longer starts a
    #: new epoch: its followers get ``recovered: false`` and reload, as after any lost history.
    channel_ttl: PositiveFloat = 24 * 3600.0


class WorkerSettings(_Section):
    batch_size: PositiveInt = 500
    concurrency: PositiveInt = 1
    #: ``stats.updated`` is published at most once per interval per interaction (docs/api.md: a few per second).
    stats_interval: PositiveFloat = 0.25


class SchedulerSettings(_Section):
    lease_ttl: PositiveFloat = 5.0
    late_grace: float = 5.0


class AnswersSettings(_Section):
    durability: Literal["queued", "replicated", "stored"] = "queued"
    #: ``replicated``: replicas that must hold the enqueued answer before the 202, and how long to wait.
    replicas: PositiveInt = 1
    replica_timeout: PositiveFloat = 1.0


class Settings(_Section):
    node: NodeSettings = msgspec.field(default_factory=NodeSettings)
    redis: RedisSettings = msgspec.field(default_factory=RedisSettings)
    store: StoreSettings = msgspec.field(default_factory=StoreSettings)
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)
    gatekeeper: GatekeeperSettings = msgspec.field(default_factory=GatekeeperSettings)
    core: CoreSettings = msgspec.field(default_factory=CoreSettings)
    push: PushSettings = msgspec.field(default_factory=PushSettings)
    worker: WorkerSettings = msgspec.field(default_factory=WorkerSettings)
    scheduler: SchedulerSettings = msgspec.field(default_factory=SchedulerSettings)
    answers: AnswersSettings = msgspec.field(default_factory=AnswersSettings)

    @property
    def embedded(self) -> bool:
        return self.redis.url is None

    def node_id(self) -> str:
        return self.node.id or f"{socket.gethostname()}-{os.getpid()}"


def _section_types() -> dict[str, type[_Section]]:
    return {f.name: f.type for f in msgspec.structs.fields(Settings)}


def _is_list_field(section: type[_Section], key: str) -> bool:
    for f in msgspec.structs.fields(section):
        if f.name == key:
            return getattr(f.type, "__origin__", None) is list or f.type is list
    return False


def env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """``PLAYTOTV_CORE_BIND=...`` → ``{"core": {"bind": "..."}}``. Variables whose section is not ours
    (e.g. ``PLAYTOTV_TEST_MONGODB_URL``) are left alone; an unknown key in a known section is an error."""
    sections = _section_types()
    out: dict[str, dict[str, Any]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX):].lower()
        section, _, key = rest.partition("_")
        if section not in sections or not key:
            continue
        if key not in {f.name for f in msgspec.structs.fields(sections[section])}:
            raise ConfigError(f"{name}: unknown key {section}.{key}")
        if _is_list_field(sections[section], key):
            out.setdefault(section, {})[key] = [v.strip() for v in value.split(",") if v.strip()]
        else:
            out.setdefault(section, {})[key] = value
    return out


def _merge(base: dict[str, Any], override: dict[str, dict[str, Any]]) -> dict[str, Any]:
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in override.items():
        target = merged.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"{section}: expected a table")
        target.update(values)
    return merged


def _key_of(error: msgspec.ValidationError) -> tuple[str, str]:
    """msgspec says "Expected `int`, got `str` - at `$.gatekeeper.licensed_capacity`"; split it."""
    text = str(error)
    problem, sep, where = text.rpartition(" - at `")
    if not sep:
        return "config", text
    key = where.rstrip("`").removeprefix("$").lstrip(".") or "config"
    return key, problem.replace("`", "")


def _field_type(key: str) -> Any:
    """The declared type of ``section.key`` (a list index, ``[0]``, is dropped), or None."""
    section, _, name = key.partition("[")[0].partition(".")
    section_type = _section_types().get(section)
    if section_type is None:
        return None
    if not name:
        return section_type
    return next((f.type for f in msgspec.structs.fields(section_type) if f.name == name), None)


_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def expected(tp: Any) -> str:
    """What a value of type ``tp`` must look like, in words: ``an integer > 0``, ``one of a, b``."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *metas = get_args(tp)
        text = expected(base)
        for meta in metas:
            if getattr(meta, "pattern", None) and base is str:
                return "HOST:PORT (port 0 picks a free one)"
            for bound, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
                if getattr(meta, bound, None) is not None:
                    text += f" {sign} {getattr(meta, bound)}"
        return text
    if origin is Literal:
        return "one of " + ", ".join(str(v) for v in get_args(tp))
    if origin in (Union, UnionType):
        return " or ".join(expected(a) for a in get_args(tp) if a is not type(None))
    if origin is list:
        return "a list of strings (in the environment: comma-separated)"
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return "a table"
    return _WORDS.get(tp, getattr(tp, "__name__", str(tp)))


def _takes_text(tp: Any) -> bool:
    """Whether a string can be a valid value of ``tp`` (``str``, a string ``Literal``, ``str | None``...)."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _takes_text(get_args(tp)[0])
    if origin in (Union, UnionType):
        return any(_takes_text(a) for a in get_args(tp))
    if origin is Literal:
        return any(isinstance(v, str) for v in get_args(tp))
    return tp is str


#: Values never repeated in an error message: secrets, and URLs (they may carry a password).
_HIDDEN_VALUES = ("auth.secret", "auth.previous_secrets", "auth.director_keys", "redis.url", "store.url")


def _shown(key: str, value: Any) -> str:
    if key.partition("[")[0] in _HIDDEN_VALUES:
        return "(value not shown)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _lookup(values: dict[str, Any], key: str) -> Any:
    """The value at ``section.key`` or ``section.key[i]`` (None where there is none)."""
    path, _, index = key.partition("[")
    value: Any = values
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if index and isinstance(value, list):
        i = int(index.rstrip("]"))
        value = value[i] if i < len(value) else None
    return value


def _typed(section: str, key: str, value: Any) -> Any:
    """An environment value converted to its setting's type (environment values are all strings, so here,
    and only here, "8001" becomes 8001 and "true" True); an error names the variable and the value."""
    name = f"{section}.{key}"
    try:
        return msgspec.convert(value, _field_type(name), strict=False)
    except msgspec.ValidationError:
        variable = f"{ENV_PREFIX}{section.upper()}_{key.upper()}"
        raise ConfigError(f"{name}: {variable}={_shown(name, value)}, expected {expected(_field_type(name))}") from None


def load_settings(path: str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """TOML values must have their setting's type (a TOML string "100" is not an integer); environment
    values are strings and are converted."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"--config {path}: cannot read ({e.strerror or e})") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"--config {path}: invalid TOML ({e})") from None
    overrides = {section: {key: _typed(section, key, value) for key, value in values.items()}
                 for section, values in env_overrides(environ).items()}
    merged = _merge(raw, overrides)
    try:
        return msgspec.convert(merged, Settings, strict=True)
    except msgspec.ValidationError as e:
        raise ConfigError(_explain(e, merged)) from None


def _explain(error: msgspec.ValidationError, values: dict[str, Any]) -> str:
    """One line for a value msgspec refused: the key, the value (unless secret) and what was expected."""
    key, problem = _key_of(error)
    if problem.startswith("Object contains unknown field"):
        field = problem.split("unknown field ", 1)[1].strip("` ")
        return f"{key}.{field}: unknown key" if key != "config" else f"{field}: unknown key"
    tp = _field_type(key)
    if tp is None:
        return f"{key}: {problem}"
    if key.endswith("]"):  # one element of a list setting
        tp = next(iter(get_args(tp)), str)
    value = _lookup(values, key)
    hint = ""
    if isinstance(value, str) and not _takes_text(tp):
        hint = " (a TOML string is not converted: write it without quotes)"
    return f"{key}: {_shown(key, value)}, expected {expected(tp)}{hint}"


def parse_roles(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise ConfigError("--role: empty")
    if "all" in names:
        return list(ROLE_NAMES)
    for n in names:
        if n not in ROLE_NAMES:
            raise ConfigError(f"--role: unknown role {n!r} (choose from {', '.join(ROLE_NAMES)}, all)")
    return [r for r in ROLE_NAMES if r in names]  # canonical start order, no duplicates


def check_deployment(settings: Settings, roles: list[str]) -> None:
    """Refuse combinations that cannot work, before anything starts."""
    if settings.embedded and sorted(roles) != sorted(ROLE_NAMES):
        raise ConfigError(
            "redis.url: required to run roles "
            f"{','.join(roles)} on their own (the embedded broker only works inside one process "
            "holding every role; set PLAYTOTV_REDIS_URL or use --role all)"
        )
    if settings.redis.url is not None:
        check_redis_url(settings.redis.url)
    if settings.embedded and settings.answers.durability == "replicated":
        raise ConfigError("answers.durability: 'replicated' needs redis.url (the embedded broker has no replicas)")
    if not settings.embedded and not settings.auth.secret:
        raise ConfigError("auth.secret: required in a cluster (every node must verify the same tickets)")
    from playtotv.credentials import check_director_key, check_secret

    for key, secret in [("auth.secret", settings.auth.secret)] + [
        ("auth.previous_secrets", old) for old in settings.auth.previous_secrets
    ]:
        if secret is not None:
            try:
                check_secret(secret)
            except ValueError as e:
                raise ConfigError(f"{key}: {e}") from None
    if not settings.embedded and "core" in roles and not settings.auth.director_keys:
        raise ConfigError("auth.director_keys: required for the core role in a cluster")
    from ipaddress import ip_network

    for key in ("session_rate_exempt", "trusted_proxies"):
        for value in getattr(settings.gatekeeper, key):
            try:
                ip_network(value, strict=False)
            except ValueError:
                raise ConfigError(f"gatekeeper.{key}: {value!r} is not an IP address or network") from None
    for key in settings.auth.director_keys:
        try:
            check_director_key(key)
        except ValueError as e:
            raise ConfigError(f"auth.director_keys: {e}") from None


def check_redis_url(url: str) -> None:
    from playtotv.redis_client import SCHEMES, SENTINEL_SCHEME, is_redis_url, parse_sentinel_url

    if not is_redis_url(url):
        raise ConfigError(f"redis.url: expected one of {', '.join(s + '://' for s in SCHEMES)}")
    if url.startswith(SENTINEL_SCHEME + "://"):
        try:
            parse_sentinel_url(url)
        except ValueError as e:
            raise ConfigError(f"redis.url: {e}") from None


def split_bind(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    return host.strip("[]"), int(port)
