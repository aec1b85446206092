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
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from yarl import URL

from tests.conftest import write_config
from tests.deploy.files import (
    CONTAINER_CONFIG,
    DEPLOY,
    ROOT,
    container_config,
    image_path,
    load_yaml,
    stop_deadline,
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
