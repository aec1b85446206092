"""The config file: what loads, and each mistake reported as file:line: message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.config import load_config
from proxy.yamlsource import ConfigError
from tests.conftest import write_config

EXAMPLES = sorted((Path(__file__).parent.parent / "deploy" / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_shipped_examples_load_clean(example: Path) -> None:
    config = load_config(example)
    assert config.upstreams


def test_written_config_loads(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, "http://127.0.0.1:9"))
    [upstream] = config.upstreams
    assert (upstream.name, upstream.path_prefix, upstream.pack) == ("demo", "/demo", "demo")
    assert config.packs["demo"].token_types.keys() == {"reader", "admin", "office", "session"}


def problems_for(tmp_path: Path, mutate: Any) -> list[str]:
    path = write_config(tmp_path, "http://127.0.0.1:9")
    document = yaml.safe_load(path.read_text())
    mutate(document)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [str(p) for p in caught.value.problems]


def source(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["upstreams"][0]["token_source"]  # type: ignore[no-any-return]


BAD_CONFIGS = [
    ("unknown_top_key", lambda d: d.update(colour="red"), "unknown key 'colour' in the config"),
    ("unknown_upstream_key", lambda d: d["upstreams"][0].update(prefix="/x"), "unknown key 'prefix' in an upstream"),
    ("wrong_type_port", lambda d: d["listen"].update(port="eighty"), "'port' must be an integer"),
    ("unknown_pack", lambda d: d["upstreams"][0].update(pack="nope"), "unknown pack 'nope'"),
    ("unknown_token_type", lambda d: source(d)["types"].append({"token_type": "ghost"}), "unknown token type 'ghost'"),
    ("bad_trusted_proxy", lambda d: d.update(trusted_proxies=["10.0.0.0/33"]), "trusted_proxies:"),
    ("leading_zero_proxy", lambda d: d.update(trusted_proxies=["010.0.0.1"]), "trusted_proxies:"),
    ("bad_url_scheme", lambda d: d["upstreams"][0].update(url="ftp://x"), "must be http:// or https://"),
    ("url_with_credentials", lambda d: d["upstreams"][0].update(url="https://u:p@x"), "must not carry"),
    ("missing_policies", lambda d: d.pop("policies"), "missing required key 'policies'"),
    ("missing_policy_file", lambda d: d.update(policies=["nowhere.yaml"]), "policy path 'nowhere.yaml' does not exist"),
    ("plaintext_beyond_loopback", lambda d: d["listen"].update(address="0.0.0.0"), "listening beyond loopback needs 'tls'"),
    ("tls_files_missing", lambda d: d["listen"].update(tls={"cert": "c.pem", "key": "k.pem"}), "file 'c.pem' does not exist"),
    ("algorithm_none", lambda d: source(d).update(algorithms=["none"]), "algorithm 'none' is not supported"),
    ("no_algorithms", lambda d: source(d).update(algorithms=[]), "pin at least one algorithm"),
    ("key_without_material", lambda d: source(d)["keys"][0].pop("secret_file"), "exactly one of secret_file"),
    ("missing_secret_env", lambda d: source(d)["keys"][0].update(secret_env="LABGATE_TEST_UNSET", secret_file=None) or source(d)["keys"][0].pop("secret_file"), "LABGATE_TEST_UNSET"),
    ("bad_matcher", lambda d: source(d)["types"][0].update(match={"role": {"regex": "x"}}), "unknown condition 'regex'"),
    ("duplicate_upstream_route", lambda d: d["upstreams"].append(dict(d["upstreams"][0], name="twin")), "reached exactly like 'demo'"),
    ("prefix_hides_metrics", lambda d: d["upstreams"][0].update(path_prefix="/metrics"), "would hide labgate's own /metrics"),
    ("prefix_hides_forward_auth", lambda d: d.update(endpoints={"forward_auth": "/demo/auth"}, trusted_proxies=["127.0.0.1"]), "would hide labgate's own /demo/auth"),
    ("forward_auth_is_metrics", lambda d: d.update(endpoints={"forward_auth": "/metrics"}, trusted_proxies=["127.0.0.1"]), "forward_auth endpoints must differ"),
    ("forward_auth_not_a_path", lambda d: d.update(endpoints={"forward_auth": "forward-auth"}, trusted_proxies=["127.0.0.1"]), "endpoints.forward_auth: path must start with '/'"),
    ("forward_auth_without_trusted_proxies", lambda d: d.update(endpoints={"forward_auth": "/forward-auth"}), "answers only peers in trusted_proxies"),
    ("bad_prefix", lambda d: d["upstreams"][0].update(path_prefix="demo"), "must start with '/'"),
    ("bad_client_ip_header", lambda d: d.update(client_ip_header="x-real-ip"), "'client_ip_header' must be one of"),
    ("no_upstreams", lambda d: d.update(upstreams=[]), "at least one upstream"),
    ("negative_limit", lambda d: d.update(limits={"max_body_bytes": -1}), "'max_body_bytes' must be at least 0"),
    ("unknown_transport", lambda d: d["upstreams"][0].update(transport="curl"), "'transport' must be one of http1, aiohttp"),
    ("unknown_source_type", lambda d: source(d).update(type="magic"), "'type' must be one of jwt"),
]


@pytest.mark.parametrize("mutate, expected", [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_is_refused_with_file_and_line(tmp_path: Path, mutate: Any, expected: str) -> None:
    found = problems_for(tmp_path, mutate)
    assert any(expected in p for p in found), found
    assert all(p.startswith(str(tmp_path / "labgate.yaml")) or ".yaml:" in p for p in found)


def test_problem_names_the_line_of_the_bad_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, "http://127.0.0.1:9")
    lines = path.read_text().splitlines()
    lines.insert(0, "# a comment")
    lines.insert(1, "bogus: 1")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [str(p).split(" (known: ")[0] for p in caught.value.problems] == [f"{path}:2: unknown key 'bogus' in the config"]


@pytest.mark.parametrize(
    "store, expected",
    [
        ({"type": "mongo"}, "'type' must be one of sqlite, redis, memory"),
        ({"type": "redis"}, "a redis store needs 'url', or 'sentinels' and 'service_name'"),
        ({"type": "redis", "sentinels": ["127.0.0.1:26379"]}, "needs 'url', or 'sentinels' and 'service_name'"),
        ({"type": "redis", "url": "redis://x", "service_name": "m"}, "either 'url' or 'sentinels'"),
        ({"type": "redis", "sentinels": ["127.0.0.1"], "service_name": "m"}, "a sentinel is host:port, not '127.0.0.1'"),
        ({"type": "redis", "url": "redis://x", "cluster": True}, "Redis Cluster is not supported"),
        ({"type": "redis", "url": "redis+cluster://x:7000"}, "Redis Cluster is not supported"),
        ({"type": "redis", "url": "redis://x", "max_connections": 0}, "'max_connections' must be at least 1"),
        ({"type": "redis", "url": "redis://x", "timeout": 0}, "'timeout' must be at least 0.05"),
        ({"type": "sqlite", "timeout": "5s"}, "'timeout' must be a number"),
        ({"type": "redis", "url": "http://x"}, "must start with redis://"),
        ({"type": "sqlite", "path": "nowhere/labgate.db"}, "the folder for the sqlite store does not exist"),
        ({"type": "memory", "path": "x.db"}, "unknown key 'path' in a memory store"),
    ],
)
def test_bad_store_settings(tmp_path: Path, store: dict[str, Any], expected: str) -> None:
    found = problems_for(tmp_path, lambda d: d.update(store=store))
    assert any(expected in p for p in found), found


def test_a_sentinel_store_is_read_with_its_bounds(tmp_path: Path) -> None:
    store = {
        "type": "redis", "sentinels": ["127.0.0.1:26379", "[::1]:26380"], "service_name": "labgate",
        "db": 2, "timeout": 1.5, "max_connections": 200,
    }
    settings = load_config(write_config(tmp_path, "http://127.0.0.1:9", store=store)).store
    assert settings.sentinels == (("127.0.0.1", 26379), ("::1", 26380))
    assert (settings.url, settings.service_name, settings.db, settings.timeout, settings.max_connections) == (
        None, "labgate", 2, 1.5, 200
    )


def test_forward_auth_is_off_by_default_and_loads_when_set(tmp_path: Path) -> None:
    assert load_config(write_config(tmp_path, "http://127.0.0.1:9")).endpoints.forward_auth is None
    config = load_config(
        write_config(tmp_path, "http://127.0.0.1:9", endpoints={"forward_auth": "/-/auth"}, trusted_proxies=["127.0.0.1"])
    )
    assert config.endpoints.forward_auth == "/-/auth"
    assert "/-/auth" in config.endpoints.all()


def test_reload_and_shutdown_settings(tmp_path: Path) -> None:
    config = load_config(
        write_config(tmp_path, "http://127.0.0.1:9", reload={"watch": False, "interval": 0.5}, shutdown={"drain_seconds": 5})
    )
    assert (config.reload.watch, config.reload.interval, config.shutdown.drain_seconds) == (False, 0.5, 5.0)
    assert config.policy_paths == ((tmp_path / "policies").resolve(),)
    defaults = load_config(write_config(tmp_path, "http://127.0.0.1:9"))
    assert (defaults.reload.watch, defaults.reload.interval, defaults.shutdown.drain_seconds) == (True, 1.0, 30.0)


@pytest.mark.parametrize(
    "override, expected",
    [
        ({"shutdown": {"drain_seconds": -1}}, "'drain_seconds' must be at least 0"),
        ({"shutdown": {"drain_seconds": 7200}}, "'drain_seconds' must be at most 3600"),
        ({"shutdown": {"drain_seconds": "30s"}}, "'drain_seconds' must be a number"),
        ({"shutdown": {"grace": 5}}, "unknown key 'grace' in shutdown"),
        ({"reload": {"interval": 0}}, "'interval' must be at least 0.1"),
        ({"reload": {"watch": "yes"}}, "'watch' must be true or false"),
        ({"reload": {"signal": "HUP"}}, "unknown key 'signal' in reload"),
        ({"reload": True}, "'reload' must be a mapping"),
    ],
    ids=["negative_drain", "drain_over_an_hour", "drain_as_text", "unknown_shutdown_key", "zero_interval", "watch_not_bool", "unknown_reload_key", "reload_not_a_mapping"],
)
def test_bad_reload_and_shutdown_settings(tmp_path: Path, override: dict[str, Any], expected: str) -> None:
    found = problems_for(tmp_path, lambda d: d.update(override))
    assert any(expected in p and p.startswith(f"{tmp_path / 'labgate.yaml'}:") for p in found), found


def test_a_pack_that_fails_to_load_is_named_as_such_not_as_unknown(tmp_path: Path) -> None:
    path = write_config(tmp_path, "http://127.0.0.1:9")
    (tmp_path / "policies" / "demo.yaml").write_text("pack: demo\ntoken_types:\n  reader:\n    routes: [FETCH /x]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = [str(p) for p in caught.value.problems]
    assert any("demo.yaml:4: route 'FETCH /x'" in p for p in problems)
    assert not any("unknown pack" in p for p in problems)
    pack_file = tmp_path / "policies" / "demo.yaml"
    assert any(p.startswith(f"{path}:") and f"pack 'demo' did not load: fix the problems reported in {pack_file} first" in p for p in problems)


def test_an_upstream_naming_a_pack_that_exists_nowhere_is_still_told(tmp_path: Path) -> None:
    problems = problems_for(tmp_path, lambda d: d["upstreams"][0].update(pack="nope"))
    assert any("unknown pack 'nope' (known: demo)" in p for p in problems)
