"""Which upstream a token request names: labgate's ``audience`` and RFC 8707's ``resource``."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import Config, load_config
from proxy.gateway.token_service.audiences import (
    NoSuchAudience,
    TargetsDiffer,
    resource_uris,
    select_upstream,
)
from tests.conftest import write_config
from tests.gateway.token_service import LAB_PACK, issuer_section

UPSTREAM = "http://127.0.0.1:9"


def three_upstreams(tmp_path: Path) -> Config:
    """demo at /demo; lab2 at /lab2 with a URI audience; svt on its own host."""
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "lab.yaml").write_text(LAB_PACK)
    upstreams = [
        {"name": "demo", "url": UPSTREAM, "path_prefix": "/demo", "pack": "lab", "token_source": {"type": "issuer"}},
        {
            "name": "lab2", "url": UPSTREAM, "path_prefix": "/lab2", "pack": "lab",
            "token_source": {"type": "issuer", "audience": ["lab-two", "https://api.lab2.example"]},
        },
        {"name": "svt", "url": UPSTREAM, "host": "svt.lab.example", "pack": "lab", "token_source": {"type": "issuer"}},
    ]
    return load_config(write_config(tmp_path, UPSTREAM, upstreams=upstreams, issuer=issuer_section()))


def named(config: Config, audience: str | None = None, *resources: str) -> str:
    return select_upstream(config, audience, resources)[0].name


def test_each_upstream_is_named_by_where_clients_reach_it_and_by_its_uri_audiences(tmp_path: Path) -> None:
    config = three_upstreams(tmp_path)
    uris = {u.name: resource_uris(config, u, u.token_source) for u in config.upstreams}  # type: ignore[arg-type]
    assert uris == {
        "demo": ("https://labgate.lab.example/demo",),
        "lab2": ("https://labgate.lab.example/lab2", "https://api.lab2.example"),
        "svt": ("https://svt.lab.example",),
    }


@pytest.mark.parametrize(
    "resource, upstream",
    [
        ("https://labgate.lab.example/demo", "demo"),
        ("https://labgate.lab.example/demo/", "demo"),
        ("HTTPS://LabGate.lab.example/demo/api/hosts", "demo"),  # a resource below it, scheme and host without case
        ("https://labgate.lab.example/lab2", "lab2"),
        ("https://api.lab2.example", "lab2"),
        ("https://svt.lab.example/api/hosts", "svt"),
    ],
)
def test_a_resource_names_the_upstream_it_lies_in(tmp_path: Path, resource: str, upstream: str) -> None:
    assert named(three_upstreams(tmp_path), None, resource) == upstream


@pytest.mark.parametrize(
    "resource",
    [
        "demo",  # a name is not an absolute URI: that is what audience= is for
        "/demo",
        "https://labgate.lab.example/demo#x",  # RFC 8707 section 2: "MUST NOT include a fragment component"
        "https://labgate.lab.example/demo?x=1",
        "https://labgate.lab.example/demo/../lab2",
        "https://labgate.lab.example/demonstration",  # whole segments only
        "https://labgate.lab.example",
        "https://elsewhere.example/demo",
        "https://labgate.lab.example/de mo",
    ],
)
def test_a_resource_that_is_malformed_or_names_no_upstream_is_refused(tmp_path: Path, resource: str) -> None:
    with pytest.raises(NoSuchAudience) as caught:
        named(three_upstreams(tmp_path), None, resource)
    assert not isinstance(caught.value, TargetsDiffer)


def test_audience_and_resource_must_name_the_same_upstream(tmp_path: Path) -> None:
    """RFC 8707 section 2: a target the server cannot issue one token for is ``invalid_target``."""
    config = three_upstreams(tmp_path)
    assert named(config, "lab-two", "https://labgate.lab.example/lab2", "https://api.lab2.example") == "lab2"
    with pytest.raises(TargetsDiffer):
        named(config, "demo", "https://labgate.lab.example/lab2")
    with pytest.raises(TargetsDiffer):
        named(config, None, "https://labgate.lab.example/demo", "https://svt.lab.example")
    with pytest.raises(NoSuchAudience):
        named(config)  # several issuer upstreams, none named


def test_the_longest_address_wins_over_a_catch_all_upstream(tmp_path: Path) -> None:
    """An upstream without path_prefix or host is reached at labgate's origin; a prefixed one is more specific."""
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "lab.yaml").write_text(LAB_PACK)
    upstreams = [
        {"name": "all", "url": UPSTREAM, "pack": "lab", "token_source": {"type": "issuer"}},
        {"name": "demo", "url": UPSTREAM, "path_prefix": "/demo", "pack": "lab", "token_source": {"type": "issuer"}},
    ]
    config = load_config(write_config(tmp_path, UPSTREAM, upstreams=upstreams, issuer=issuer_section()))
    assert named(config, None, "https://labgate.lab.example/demo/api") == "demo"
    assert named(config, None, "https://labgate.lab.example/api/hosts") == "all"
