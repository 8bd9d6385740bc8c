"""The deployment examples in ``config/`` refer to real things: commands the CLI accepts, settings that
exist and pass the deployment checks, ports the nodes listen on, health paths they serve, metrics they
export, and a grace period that covers the drain. A renamed key, port or metric breaks this test, not a
production rollout.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from playtotv import cli
from playtotv.metrics import Metrics
from playtotv.settings import ROLE_NAMES, Settings, check_deployment, env_overrides, load_settings, parse_roles, split_bind

#: The C parser where libyaml is there.
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "config" / "k8s"
#: The margin a pod gets beyond the drain to exit (and at most this much more: a stuck pod should go).
GRACE_MARGIN = (1, 10)
#: Values the downward API fills in at run time.
FIELD_REFS = {"metadata.name": "playtotv-core-5d8c7-abcde", "status.podIP": "10.1.2.3"}


@functools.cache  # parsed once: the tests only read the documents, and parsing is most of their time
def documents() -> tuple[dict[str, Any], ...]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.load_all(path.read_text(), Loader=SafeLoader) if d]
    return tuple(docs)


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in documents() if d["kind"] == kind]


def shared_env() -> dict[str, str]:
    [config] = [d for d in of_kind("ConfigMap") if d["metadata"]["name"] == "playtotv-config"]
    [secret] = [d for d in of_kind("Secret") if d["metadata"]["name"] == "playtotv-secrets"]
    return {**config["data"], **secret["stringData"]}


def containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for deployment in of_kind("Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            yield deployment, container


def container_env(container: dict[str, Any]) -> dict[str, str]:
    sources = {ref.get("configMapRef", ref.get("secretRef", {})).get("name") for ref in container["envFrom"]}
    assert sources == {"playtotv-config", "playtotv-secrets"}
    env = dict(shared_env())
    for item in container.get("env", []):
        env[item["name"]] = item["value"] if "value" in item else FIELD_REFS[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def node_of(container: dict[str, Any]) -> tuple[list[str], Settings]:
    """What ``playtotv`` would run with this container's command and environment (or the reason it
    would refuse to start, as a failed assertion)."""
    command = container["command"]
    assert command[0] == "playtotv"
    args = cli._parser().parse_args(command[1:])  # exits with status 2 on anything the CLI refuses
    assert args.command == "serve"
    roles = parse_roles(args.role)
    settings = load_settings(None, environ=container_env(container))
    check_deployment(settings, roles)
    return roles, settings


def http_ports(roles: list[str], settings: Settings) -> dict[int, str]:
    """Listener port → what listens there. WebSocket excluded: it serves no /healthz."""
    ports = {}
    if "gatekeeper" in roles:
        ports[split_bind(settings.gatekeeper.bind)[1]] = "gatekeeper"
    if "core" in roles:
        ports[split_bind(settings.core.bind)[1]] = "core"
    if "push" in roles:
        ports[split_bind(settings.push.polling_bind)[1]] = "push-polling"
    if settings.node.ops_bind:
        ports[split_bind(settings.node.ops_bind)[1]] = "ops"
    return ports


def test_every_deployment_runs_a_command_the_cli_accepts_with_valid_settings() -> None:
    seen = set()
    for _, container in containers():
        roles, settings = node_of(container)
        assert not settings.embedded, "a cluster node needs redis.url"
        assert settings.redis.url and settings.redis.url.startswith("redis+sentinel://")
        assert settings.store.url.startswith("mongodb://") and "replicaSet=" in settings.store.url
        seen.update(roles)
    assert seen == set(ROLE_NAMES), "one Deployment per role"


def test_container_ports_probes_and_scrape_ports_are_the_listeners() -> None:
    for deployment, container in containers():
        roles, settings = node_of(container)
        listeners = http_ports(roles, settings)
        if "push" in roles:
            listeners_and_ws = {**listeners, split_bind(settings.push.bind)[1]: "push"}
        else:
            listeners_and_ws = listeners
        assert {p["containerPort"] for p in container["ports"]} == set(listeners_and_ws)
        ready, live = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
        assert ready["path"] == "/readyz" and live["path"] == "/healthz"
        assert ready["port"] in listeners and live["port"] in listeners
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert int(annotations["prometheus.io/port"]) in listeners
        assert annotations["prometheus.io/path"] == "/metrics"


def test_services_select_a_deployment_and_target_its_ports() -> None:
    deployments = of_kind("Deployment")
    for service in of_kind("Service"):
        selector = service["spec"]["selector"]
        matches = [d for d in deployments
                   if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matches) == 1, service["metadata"]["name"]
        ports = {p["containerPort"] for c in matches[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports


def test_grace_period_covers_the_drain() -> None:
    for deployment, container in containers():
        _, settings = node_of(container)
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        low, high = GRACE_MARGIN
        assert settings.node.drain_seconds + low <= grace <= settings.node.drain_seconds + high


def test_autoscalers_scale_deployments_on_exported_signals() -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind("Deployment")}
    gauges = {metric._name: metric for metric in vars(Metrics()).values() if hasattr(metric, "_labelnames")}
    for hpa in of_kind("HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments
        [container] = deployments[target["name"]]["spec"]["template"]["spec"]["containers"]
        roles, _ = node_of(container)
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "Resource":
                assert metric["resource"]["name"] in ("cpu", "memory")
                continue
            assert metric["type"] == "Pods"
            name, labels = metric["pods"]["metric"]["name"], metric["pods"]["metric"]["selector"]["matchLabels"]
            assert name in gauges, f"{name} is not exported"
            assert set(labels) <= set(gauges[name]._labelnames)
            for key, value in labels.items():
                if key == "role":
                    assert value in roles
                if key == "signal":  # a load / QoS signal the scaled role really reports
                    assert signal_reported(roles, value), f"no role of {roles} reports {value!r}"


def signal_reported(roles: list[str], signal: str) -> bool:
    pattern = re.compile(rf"""(load|qos)\[["']{re.escape(signal)}["']\]\s*=""")
    sources = [p for role in roles for p in (ROOT / "roles" / role).rglob("*.py")]
    return any(pattern.search(path.read_text()) for path in sources)


@pytest.mark.parametrize("name", ["embedded.toml", "cluster.toml", "sentinel.toml"])
def test_example_configuration_files_are_valid(name: str) -> None:
    settings = load_settings(str(ROOT / "config" / name), environ={})
    for role in ROLE_NAMES if not settings.embedded else ["all"]:
        check_deployment(settings, parse_roles(role))


def test_environment_variables_named_in_the_docs_exist() -> None:
    text = (ROOT / "config" / "DEPLOYMENT.md").read_text() + (ROOT / "README.md").read_text()
    # Not settings: the tests' own switches, and the variable the README's SDK example script reads.
    not_settings = {"PLAYTOTV_TEST_MONGODB_URL", "PLAYTOTV_UPDATE_SCREENSHOTS", "PLAYTOTV_DIRECTOR_KEY"}
    names = set(re.findall(r"PLAYTOTV_[A-Z_]+", text)) - not_settings
    assert names
    for name in names:
        env_overrides({name: "x"})  # raises ConfigError for an unknown key of a known section
        section = name.removeprefix("PLAYTOTV_").split("_")[0].lower()
        assert section in Settings.__struct_fields__, name


def test_the_dockerfile_installs_the_package_and_runs_the_cli() -> None:
    text = (ROOT / "config" / "Dockerfile").read_text()
    assert re.search(r"^RUN pip install [^\n]*\s\.(\s|$)", text, re.M), "installs the repository"
    assert re.search(r'^ENTRYPOINT \["playtotv"\]$', text, re.M)
    for _, container in containers():
        assert container["image"].split(":")[0] == "playtotv"


def test_the_readme_configuration_table_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| key | default | meaning |"):]
    table = table[:table.index("\n\n")]
    listed = {key for row in table.splitlines()[2:] for key in re.findall(r"`([a-z_]+\.[a-z_0-9]+)`", row.split("|")[1])}
    defaults = Settings()
    settings = {f"{section}.{name}" for section in Settings.__struct_fields__
                for name in type(getattr(defaults, section)).__struct_fields__}
    assert settings - listed == set(), "settings missing from the README's table"
    assert listed - settings == set(), "the README's table lists keys that do not exist"
