"""deploy/prometheus and deploy/grafana: valid for their tools, and only about metrics labgate exports.

promtool checks the rules and the Prometheus config, runs the alert unit tests
(deploy/prometheus/alerts.test.yaml), and parses every dashboard query as
PromQL. Every ``labgate_*`` name they use must be a series labgate's own
registry produces.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from proxy.metrics import GatewayMetrics
from tests.deploy.files import DEPLOY, container_config, load_yaml, required_tool

PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "labgate.json"
METRIC = re.compile(r"\blabgate_[a-z0-9_]+")
SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_families() -> dict[str, tuple[str, ...]]:
    """Family name -> the series names it exports; families without samples yet are listed too."""
    return {
        family.name: tuple(family.name + suffix for suffix in SAMPLE_SUFFIXES[family.type])
        for family in GatewayMetrics().registry.collect()
    }


def exported_series() -> set[str]:
    return {name for names in exported_families().values() for name in names}


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    tool = required_tool("promtool", "prometheus")
    return subprocess.run([tool, *map(str, args)], capture_output=True, text=True, timeout=120)


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(PROMETHEUS / "alerts.yaml")["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def dashboard_targets() -> list[tuple[str, dict[str, Any]]]:
    return [(p["title"], t) for p in dashboard()["panels"] for t in p.get("targets", [])]


def dashboard_queries() -> list[str]:
    variables = [v["definition"] for v in dashboard()["templating"]["list"] if v["type"] == "query"]
    return [t["expr"] for _, t in dashboard_targets()] + variables


def as_promql(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced by what they stand for."""
    expr = expr.replace("$__rate_interval", "5m").replace("$upstream", ".*").replace("$instance", ".*")
    assert "$" not in expr, f"unknown dashboard variable in {expr}"
    return expr


# -- Prometheus -----------------------------------------------------------------------


def test_alert_rules_pass_promtool() -> None:
    checked = promtool("check", "rules", PROMETHEUS / "alerts.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alert_rules_fire_when_and_only_when_specified() -> None:
    tested = promtool("test", "rules", PROMETHEUS / "alerts.test.yaml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_unit_test() -> None:
    tested = {case["alertname"] for test in load_yaml(PROMETHEUS / "alerts.test.yaml")["tests"] for case in test["alert_rule_test"]}
    firing = {
        case["alertname"]
        for test in load_yaml(PROMETHEUS / "alerts.test.yaml")["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert tested == firing == {rule["alert"] for rule in alert_rules()}


def test_every_alert_has_a_severity_and_a_summary() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_prometheus_config_passes_promtool() -> None:
    checked = promtool("check", "config", PROMETHEUS / "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_prometheus_scrapes_both_compose_replicas_and_loads_the_rules() -> None:
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "labgate"]
    labgate = container_config()
    services = load_yaml(DEPLOY / "compose.yaml")["services"]
    replicas = {n for n, s in services.items() if s.get("build", {}).get("dockerfile") == "deploy/Dockerfile"}
    targets = {t for static in job["static_configs"] for t in static["targets"]}
    assert targets == {f"{name}:{labgate.listen.port}" for name in replicas}
    assert job["metrics_path"] == labgate.endpoints.metrics
    # rule_files is relative to prometheus.yml, both in the repository and where compose mounts them.
    mounts = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"] if v.startswith("."))
    inside = {Path(source).name: PurePosixPath(target) for source, target in mounts.items()}
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS / rule_file).is_file()
        assert inside["prometheus.yml"].parent / rule_file == inside[rule_file]


def test_alerts_and_dashboard_select_the_scrape_job_prometheus_uses() -> None:
    [job] = [j["job_name"] for j in load_yaml(PROMETHEUS / "prometheus.yml")["scrape_configs"] if "labgate" in str(j)]
    queries = "\n".join([r["expr"] for r in alert_rules()] + dashboard_queries())
    assert set(re.findall(r'job="([^"]+)"', queries)) == {job}


# -- metric names --------------------------------------------------------------------


def test_gateway_metrics_export_the_contract_families() -> None:
    # Sanity for the checks below: the registry walk finds families that have no samples yet.
    assert {"labgate_requests_total", "labgate_request_duration_seconds_bucket"} <= exported_series()


@pytest.mark.parametrize(
    "where, queries",
    [
        ("alerts.yaml", lambda: [r["expr"] for r in alert_rules()]),
        ("alerts.test.yaml", lambda: [s["series"] for t in load_yaml(PROMETHEUS / "alerts.test.yaml")["tests"] for s in t["input_series"]]),
        ("labgate.json", dashboard_queries),
    ],
)
def test_every_metric_used_is_one_labgate_exports(where: str, queries: Any) -> None:
    used = {name for query in queries() for name in METRIC.findall(query)}
    assert used, where
    assert used - exported_series() == set(), f"{where} uses series labgate does not export"


def test_dashboard_shows_every_metric_family() -> None:
    used = {name for query in dashboard_queries() for name in METRIC.findall(query)}
    missing = [family for family, series in exported_families().items() if not used & set(series)]
    assert missing == [], "add a panel for each new metric family to deploy/grafana/dashboards/labgate.json"


# -- Grafana -------------------------------------------------------------------------


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:query_{index}", "expr": as_promql(expr)}
        for index, expr in enumerate(t["expr"] for _, t in dashboard_targets())
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = promtool("check", "rules", path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_dashboard_panels_are_well_formed() -> None:
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"], panel["title"]
    for title, target in dashboard_targets():
        assert target["datasource"]["uid"] == "${datasource}", title
    assert {v["name"] for v in dashboard()["templating"]["list"]} == {"datasource", "upstream", "instance"}


def test_grafana_provisioning_matches_compose() -> None:
    grafana = load_yaml(DEPLOY / "compose.yaml")["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"] if v.startswith("."))
    [datasource] = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yaml")["datasources"]
    assert (datasource["type"], datasource["url"]) == ("prometheus", "http://prometheus:9090")
    [provider] = load_yaml(GRAFANA / "provisioning" / "dashboards" / "labgate.yaml")["providers"]
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    assert DASHBOARD.parent == (DEPLOY / "grafana" / "dashboards")
