"""deploy/: the image, compose, Kubernetes and systemd files agree with each other and with labgate.

Each file names things another part defines (a port, an endpoint path, a uid,
a service name, a mount point, the drain deadline); these tests check every
such name against its source, and run the checkers that work offline.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import json
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from yarl import URL

from proxy.config import ShutdownSettings
from proxy.workers import STOP_MARGIN_SECONDS
from tests.conftest import write_config
from tests.deploy.files import (
    CONTAINER_CONFIG,
    DEPLOY,
    ROOT,
    container_config,
    image_path,
    load_yaml,
    optional_tool,
)
from tests.labgate_process import labgate_serving

YAML_FILES = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


@pytest.mark.parametrize("path", YAML_FILES, ids=[str(p.relative_to(DEPLOY)) for p in YAML_FILES])
def test_every_yaml_file_parses(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents and all(isinstance(d, dict) for d in documents)


# -- the container image ----------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        text = line.strip()
        if not pending and (not text or text.startswith("#")):
            continue
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        word, _, rest = (pending + text).partition(" ")
        instructions.append((word.upper(), rest.strip()))
        pending = ""
    return instructions


def instruction(name: str) -> list[str]:
    return [args for word, args in dockerfile() if word == name]


def copies() -> dict[str, str]:
    """COPY destination -> source, for files copied from the build context."""
    found = {}
    for args in instruction("COPY"):
        if args.startswith("--from"):
            continue
        *sources, destination = args.split()
        for source in sources:
            found[destination if len(sources) == 1 else f"{destination.rstrip('/')}/{source}"] = source
    return found


def image_uid() -> int:
    [user] = instruction("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit(), "USER must be a numeric uid:gid, so Kubernetes can check runAsNonRoot"
    return int(uid)


def test_image_starts_from_python_311_slim_and_keeps_no_pip_cache() -> None:
    assert all(args.split()[0] == "python:3.11-slim" for args in instruction("FROM"))
    installs = [args for args in instruction("RUN") if "pip install" in args]
    assert installs and all("--no-cache-dir" in args for args in installs)


def test_image_runs_as_a_fixed_unprivileged_user() -> None:
    uid = image_uid()
    assert uid >= 1000
    assert any(f"useradd --system --uid {uid}" in args for args in instruction("RUN"))


def test_image_serves_the_container_config_on_the_exposed_port() -> None:
    config = container_config()
    assert instruction("EXPOSE") == [str(config.listen.port)]
    assert [json.loads(a) for a in instruction("ENTRYPOINT")] == [["labgate", "serve"]]
    [cmd] = [json.loads(a) for a in instruction("CMD")]
    assert cmd == ["--config", str(image_path(CONTAINER_CONFIG))]
    assert copies()[cmd[1]] == "deploy/examples/container.yaml"
    # The config's relative policies path finds the packs the image carries.
    assert copies()[str(image_path(ROOT / "policies"))] == "policies"
    assert [p.resolve() for p in config.policy_paths] == [(ROOT / "policies").resolve()]


def test_image_takes_only_what_dockerignore_lets_in() -> None:
    patterns = [p for p in (ROOT / ".dockerignore").read_text().splitlines() if p and not p.startswith("#")]
    assert patterns[0] == "*", "everything is excluded first, then the few inputs let back in"
    let_in = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert set(copies().values()) | {"pyproject.toml", "README.md"} <= let_in
    assert not [p for p in let_in if "keys" in p or p.endswith(".db") or ".venv" in p]


def test_healthcheck_is_the_standard_library_script() -> None:
    [check] = instruction("HEALTHCHECK")
    script = str(image_path(DEPLOY / "healthcheck.py"))
    assert json.loads(check.split(" CMD ", 1)[1]) == ["python", script]
    assert copies()[script] == "deploy/healthcheck.py"
    tree = ast.parse((DEPLOY / "healthcheck.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}


def test_healthcheck_asks_the_containers_health_endpoint_by_default() -> None:
    spec = importlib.util.spec_from_file_location("healthcheck", DEPLOY / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = container_config()
    assert module.DEFAULT_URL == f"http://127.0.0.1:{config.listen.port}{config.endpoints.health}"


async def run_healthcheck(url: str) -> int:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(DEPLOY / "healthcheck.py"), env={"LABGATE_HEALTH_URL": url},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), 10)


async def test_healthcheck_passes_while_labgate_answers_and_fails_otherwise(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9", store={"type": "memory"})
    async with labgate_serving(config) as (url, _):
        assert await run_healthcheck(f"{url}/healthz") == 0
        assert await run_healthcheck(f"{url}/not-an-endpoint") == 1  # 404 no_upstream
    assert await run_healthcheck(f"{url}/healthz") == 1  # nothing listens any more


# -- compose -------------------------------------------------------------------------


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = load_yaml(DEPLOY / "compose.yaml")["services"]
    return services


def labgate_services() -> dict[str, Any]:
    return {n: s for n, s in compose_services().items() if s.get("build", {}).get("dockerfile") == "deploy/Dockerfile"}


def host_path(volumes: list[str], inside: str) -> Path:
    """The repository file a compose bind mount shows at ``inside``."""
    for volume in volumes:
        source, target = volume.split(":")[:2]
        if source.startswith(".") and PurePosixPath(inside).is_relative_to(target):
            return (DEPLOY / source / PurePosixPath(inside).relative_to(target)).resolve()
    raise AssertionError(f"nothing is mounted at {inside}")


def stop_deadline(drain_seconds: float) -> float:
    """How long labgate may take to stop after SIGTERM: the drain, then (with --workers) closing."""
    return drain_seconds + STOP_MARGIN_SECONDS


def seconds(duration: str) -> int:
    assert duration.endswith("s") and duration[:-1].isdigit(), duration
    return int(duration[:-1])


def test_compose_runs_two_labgate_replicas_redis_prometheus_and_grafana() -> None:
    assert len(labgate_services()) == 2
    assert {"redis", "prometheus", "grafana"} <= compose_services().keys()


def test_compose_replicas_run_the_container_config_with_its_key() -> None:
    config = container_config()
    for name, service in labgate_services().items():
        flag, inside = service["command"]
        assert flag == "--config" and host_path(service["volumes"], inside) == CONTAINER_CONFIG.resolve(), name
        key = host_path(service["volumes"], str(PurePosixPath(inside).parent / "keys" / "demo-hs256.secret"))
        assert key.is_file()
        assert seconds(service["stop_grace_period"]) > stop_deadline(config.shutdown.drain_seconds)
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]


def test_compose_store_is_its_redis_service() -> None:
    store = container_config().store
    assert store.kind == "redis" and store.url is not None
    url = URL(store.url)
    assert (url.host, url.port) == ("redis", 6379)
    assert "ports" not in compose_services()["redis"], "Redis holds revocations: never published"


def test_compose_publishes_every_port_on_loopback_only() -> None:
    # labgate serves plain HTTP in compose, and clients send bearer tokens.
    published = [(n, p) for n, s in compose_services().items() for p in s.get("ports", [])]
    assert published and all(p.startswith("127.0.0.1:") for _, p in published), published
    port = container_config().listen.port
    assert sorted(p.rsplit(":", 1)[1] for n, p in published if n in labgate_services()) == [str(port)] * 2


# -- Kubernetes ----------------------------------------------------------------------

KUBERNETES = DEPLOY / "kubernetes"


def kustomization() -> dict[str, Any]:
    document: dict[str, Any] = load_yaml(KUBERNETES / "kustomization.yaml")
    return document


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for resource in kustomization()["resources"]:
        for document in yaml.safe_load_all((KUBERNETES / resource).read_text()):
            found[(document["kind"], document["metadata"]["name"])] = document
    return found


def generated(kind: str, name: str) -> list[Path]:
    [generator] = [g for g in kustomization()[kind] if g["name"] == name]
    return [(KUBERNETES / f.split("=")[-1]).resolve() for f in generator["files"]]


def labgate_pod() -> dict[str, Any]:
    spec: dict[str, Any] = manifests()[("Deployment", "labgate")]["spec"]["template"]
    return spec


def labgate_container() -> dict[str, Any]:
    [container] = labgate_pod()["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def mounted_file(inside: str) -> tuple[str, str, str]:
    """(volume kind, object name, key) that the labgate pod shows at path ``inside``."""
    volumes = {v["name"]: v for v in labgate_pod()["spec"]["volumes"]}
    for mount in labgate_container()["volumeMounts"]:
        if not PurePosixPath(inside).is_relative_to(mount["mountPath"]):
            continue
        relative = str(PurePosixPath(inside).relative_to(mount["mountPath"]))
        volume = volumes[mount["name"]]
        sources = volume["projected"]["sources"] if "projected" in volume else [volume]
        for source in sources:
            kind = "configMap" if "configMap" in source else "secret"
            ref = source[kind]
            name = ref.get("name") or ref.get("secretName")
            for item in ref.get("items", [{"key": relative, "path": relative}]):
                if item["path"] == relative:
                    return kind, name, item["key"]
    raise AssertionError(f"nothing is mounted at {inside}")


def test_kubernetes_has_the_required_objects() -> None:
    kinds = {kind for kind, _ in manifests()}
    assert {"Deployment", "Service", "PodDisruptionBudget", "StatefulSet"} <= kinds
    assert manifests()[("Service", "redis")]
    assert {g["name"] for g in kustomization()["configMapGenerator"]} == {"labgate-config", "labgate-policies"}


def test_kubernetes_policies_are_every_shipped_pack() -> None:
    packs = sorted(p.resolve() for p in (ROOT / "policies").glob("*.yaml") if not p.name.endswith(".tests.yaml"))
    assert sorted(generated("configMapGenerator", "labgate-policies")) == packs, "list every pack in kustomization.yaml"
    assert generated("configMapGenerator", "labgate-config") == [CONTAINER_CONFIG.resolve()]
    assert all(p.is_file() for p in generated("secretGenerator", "labgate-keys"))


def test_kubernetes_runs_two_unprivileged_replicas_on_a_read_only_root() -> None:
    deployment = manifests()[("Deployment", "labgate")]
    assert deployment["spec"]["replicas"] >= 2
    pod = labgate_pod()["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == image_uid()
    assert pod["automountServiceAccountToken"] is False
    container = labgate_container()["securityContext"]
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"]["drop"] == ["ALL"]
    resources = labgate_container()["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"] and resources["limits"]["memory"]


def test_kubernetes_probes_ask_the_configured_endpoints() -> None:
    config = container_config()
    container = labgate_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    live, ready = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
    assert (live["path"], ports[live["port"]]) == (config.endpoints.health, config.listen.port)
    assert (ready["path"], ports[ready["port"]]) == (config.endpoints.ready, config.listen.port)
    scrape = labgate_pod()["metadata"]["annotations"]
    assert (scrape["prometheus.io/path"], int(scrape["prometheus.io/port"])) == (config.endpoints.metrics, config.listen.port)


def test_kubernetes_mounts_config_packs_and_key_where_the_config_expects_them() -> None:
    flag, inside = labgate_container()["args"]
    assert flag == "--config" and inside == str(image_path(CONTAINER_CONFIG))
    assert mounted_file(inside) == ("configMap", "labgate-config", CONTAINER_CONFIG.name)
    for pack in generated("configMapGenerator", "labgate-policies"):
        assert mounted_file(str(image_path(pack))) == ("configMap", "labgate-policies", pack.name)
    [key] = generated("secretGenerator", "labgate-keys")
    assert mounted_file(str(image_path(key))) == ("secret", "labgate-keys", key.name)


def test_kubernetes_gives_the_drain_time_to_finish() -> None:
    pod = labgate_pod()["spec"]
    pre_stop = labgate_container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + stop_deadline(container_config().shutdown.drain_seconds)


def test_kubernetes_service_pdb_and_store_reach_the_pods() -> None:
    objects = manifests()
    labels = labgate_pod()["metadata"]["labels"]
    service, pdb = objects[("Service", "labgate")], objects[("PodDisruptionBudget", "labgate")]
    assert service["spec"]["selector"].items() <= labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < objects[("Deployment", "labgate")]["spec"]["replicas"]
    store = URL(container_config().store.url or "")
    redis = objects[("Service", store.host or "")]
    assert [p["port"] for p in redis["spec"]["ports"]] == [store.port]


def test_kustomize_builds_with_generated_names() -> None:
    kubectl = optional_tool("kubectl")
    built = subprocess.run(
        [kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(KUBERNETES)],
        capture_output=True, text=True, timeout=60,
    )
    assert built.returncode == 0, built.stderr
    objects = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(built.stdout)}
    policies = next(d for (kind, name), d in objects.items() if kind == "ConfigMap" and name.startswith("labgate-policies-"))
    assert sorted(policies["data"]) == sorted(p.name for p in generated("configMapGenerator", "labgate-policies"))
    volumes = json.dumps(objects[("Deployment", "labgate")]["spec"]["template"]["spec"]["volumes"])
    assert policies["metadata"]["name"] in volumes and '"labgate-policies"' not in volumes


# -- systemd -------------------------------------------------------------------------

UNIT = DEPLOY / "systemd" / "labgate.service"


def unit_settings() -> dict[str, list[str]]:
    """Every key of the [Service] section with all its values (keys like ExecReload repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


HARDENING = {
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
    "PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes", "RestrictSUIDSGID": "yes", "RestrictNamespaces": "yes",
    "LockPersonality": "yes", "CapabilityBoundingSet": "", "StateDirectory": "labgate", "KillSignal": "SIGTERM",
}


def test_systemd_unit_is_hardened() -> None:
    settings = unit_settings()
    assert {k: settings.get(k, [None])[-1] for k in HARDENING} == HARDENING
    assert settings["User"] != ["root"] and settings["User"]
    assert "@system-service" in settings["SystemCallFilter"]
    assert settings["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]


def test_systemd_unit_serves_reloads_on_sighup_and_outlasts_the_drain() -> None:
    settings = unit_settings()
    [serve] = settings["ExecStart"]
    assert serve.split()[1:4] == ["serve", "--config", "/etc/labgate/labgate.yaml"]
    assert settings["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
    # SIGTERM to the main process only: with --workers it passes it on and waits for them.
    assert settings["KillMode"] == ["mixed"]
    assert int(settings["TimeoutStopSec"][0]) > stop_deadline(ShutdownSettings().drain_seconds)


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """systemd-analyze accepts every key, once labgate is where ExecStart says (here: this venv)."""
    analyze = optional_tool("systemd-analyze")
    installed = Path(sys.executable).parent / "labgate"
    assert installed.is_file()
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/labgate/venv/bin/labgate", str(installed)))
    verified = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert (verified.returncode, verified.stderr) == (0, "")
