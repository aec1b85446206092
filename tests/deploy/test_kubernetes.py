"""deploy/kubernetes/: the manifests agree with labgate: objects, packs, probes, mounts, the drain time."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from yarl import URL

from tests.deploy.files import (
    CONTAINER_CONFIG,
    DEPLOY,
    ROOT,
    container_config,
    image_path,
    load_yaml,
    optional_tool,
    stop_deadline,
)
from tests.deploy.test_deploy import image_uid

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
