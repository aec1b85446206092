"""The JSON Schemas for editors: valid draft 2020-12, shipped in docs/, accepting every shipped file, in step with the readers.

The readers declare the keys of each section in one call (``expect_keys``).
The test records those calls while every shipped config, every shipped pack
and a config holding every section (``every_key.yaml``) load, and requires
each recorded section's keys to be exactly the properties of its place in the
schema; a reader section that no file reaches fails the test too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from proxy.cli import main
from proxy.config import TOKEN_HEADERS, TRANSPORTS, load_config
from proxy.credentials.settings import CREDENTIAL_TYPES
from proxy.issuer.grants import MAPPED_GRANTS
from proxy.issuer.service_accounts import SCOPES
from proxy.policy.load import load_pack_file
from proxy.schemas import SCHEMAS, schema_text
from proxy.store.open import STORE_KINDS
from proxy.tokens.settings import SOURCE_TYPES
from proxy.verification_keys import ALGORITHM_FAMILIES
from proxy.yamlsource import ConfigError, FieldReader

ROOT = Path(__file__).parent.parent.parent
EXAMPLES = sorted((ROOT / "deploy" / "examples").glob("*.yaml"))
PACKS = sorted(p for p in (ROOT / "policies").glob("*.yaml") if not p.name.endswith(".tests.yaml"))
EVERY_KEY = Path(__file__).parent / "every_key.yaml"
SCHEMA_LINE = re.compile(r"# yaml-language-server: \$schema=(\S+)")

# Where each reader section lives in its schema (JSON pointers; several for a section read the same way in several places).
CONFIG_PLACES: dict[str, tuple[str, ...]] = {
    "the config": ("",),
    "listen": ("/properties/listen",),
    "listen.tls": ("/properties/listen/properties/tls",),
    "a sqlite store": ("/properties/store/oneOf/0",),
    "a redis store": ("/properties/store/oneOf/1",),
    "a memory store": ("/properties/store/oneOf/2",),
    "reload": ("/properties/reload",),
    "shutdown": ("/properties/shutdown",),
    "limits": ("/properties/limits",),
    "endpoints": ("/properties/endpoints",),
    "issuer": ("/properties/issuer",),
    "issuer.admin": ("/properties/issuer/properties/admin",),
    "an emergency account": ("/properties/issuer/properties/emergency_accounts/items",),
    "an upstream": ("/$defs/upstream",),
    "upstream tls": ("/$defs/upstream/properties/tls",),
    "timeouts": ("/$defs/upstream/properties/timeouts",),
    "a jwt token_source": ("/$defs/jwtSource",),
    "a key": ("/$defs/jwtSource/properties/keys/items",),
    "a types entry": ("/$defs/jwtSource/properties/types/items",),
    "an observe token_source": ("/$defs/observeSource",),
    "an introspect token_source": ("/$defs/introspectSource",),
    "token_source.tls": ("/$defs/introspectSource/properties/tls",),
    "an issuer token_source": ("/$defs/issuerSource",),
    "token_source.cache": tuple(f"/$defs/{s}Source/properties/cache" for s in ("jwt", "observe", "introspect", "issuer")),
    "emergency_clients": ("/$defs/issuerSource/properties/emergency_clients",),
    "a roles entry": ("/$defs/issuerSource/properties/emergency_clients/properties/roles/items",),
    "a bearer credential": ("/$defs/bearerCredential",),
    "a basic credential": ("/$defs/basicCredential",),
    "an oauth credential": ("/$defs/oauthCredential",),
    "credential.tls": ("/$defs/oauthCredential/properties/tls",),
    "headers": ("/$defs/upstream/properties/headers",),
    "an upstream's rate_limit": ("/$defs/upstream/properties/rate_limit/oneOf/1",),
    "health": ("/$defs/upstream/properties/health",),
}
PACK_PLACES: dict[str, tuple[str, ...]] = {
    "a policy pack": ("",),
    "token type": ("/$defs/tokenType",),
    "query": ("/$defs/tokenType/properties/query",),
    "lifetimes": ("/$defs/tokenType/properties/lifetimes",),
    "headers": ("/properties/headers",),
    "a route entry": ("/$defs/tokenType/properties/routes/items/else",),
    "rate_limit": ("/$defs/rateLimit/oneOf/1",),
}
# Policy test files (*.tests.yaml) have no schema: labgate test reads them.
NOT_IN_A_SCHEMA = ("proxy/policy/testcases.py",)


def schema(name: str) -> dict[str, Any]:
    return json.loads(schema_text(name))  # type: ignore[no-any-return]


def at(document: dict[str, Any], pointer: str) -> Any:
    for part in pointer.split("/")[1:]:
        document = document[int(part)] if isinstance(document, list) else document[part]
    return document


@pytest.mark.parametrize("name", SCHEMAS)
def test_each_schema_is_valid_draft_2020_12(name: str) -> None:
    Draft202012Validator.check_schema(schema(name))
    assert schema(name)["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("name", SCHEMAS)
def test_docs_ship_exactly_what_labgate_schema_prints(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", name]) == 0
    printed = capsys.readouterr().out
    shipped = (ROOT / "docs" / "schema" / f"{name}.schema.json").read_text()
    assert printed == shipped, f"run: .venv/bin/labgate schema {name} > docs/schema/{name}.schema.json"


@pytest.mark.parametrize(("name", "path"), [("config", p) for p in EXAMPLES] + [("pack", p) for p in PACKS], ids=lambda v: getattr(v, "name", v))
def test_every_shipped_file_validates_and_names_its_schema(name: str, path: Path) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in Draft202012Validator(schema(name)).iter_errors(yaml.safe_load(path.read_text()))]
    assert errors == []
    named = SCHEMA_LINE.match(path.read_text().splitlines()[0])
    assert named, f"{path.name}: the first line names no schema"
    assert (path.parent / named.group(1)).resolve() == ROOT / "docs" / "schema" / f"{name}.schema.json"


@pytest.mark.parametrize(
    ("name", "document", "complaint"),
    [
        ("config", {"policies": [], "upstreams": [], "colour": "red"}, "Additional properties are not allowed ('colour'"),
        ("config", {"policies": ["p"], "upstreams": [{"name": "a", "url": "https://a", "pack": "p", "token_source": {"type": "jwt", "algorithms": ["none"], "types": [{"token_type": "t"}]}}]}, "'none' is not one of"),
        ("pack", {"pack": "p", "token_types": {"t": {"routes": ["FETCH /x"]}}}, "does not match"),
        ("pack", {"pack": "p", "token_types": {"t": {"query": {"allow": [], "deny": []}}}}, "has too many properties"),
    ],
)
def test_the_schemas_flag_what_an_editor_should(name: str, document: dict[str, Any], complaint: str) -> None:
    messages = [e.message for e in Draft202012Validator(schema(name)).iter_errors(document)]
    assert any(complaint in m for m in messages), messages


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, frozenset[str]]]:
    """(call site, section, keys) of every expect_keys call while the shipped files and every_key.yaml load."""
    calls: list[tuple[str, str, frozenset[str]]] = []
    original = FieldReader.expect_keys

    def recording(self: FieldReader, mapping: Any, allowed: Iterable[str], what: str) -> None:
        import sys

        caller = sys._getframe(1)
        site = f"{Path(caller.f_code.co_filename).relative_to(ROOT)}:{caller.f_lineno}"
        allowed = tuple(allowed)
        calls.append((site, what, frozenset(allowed)))
        original(self, mapping, allowed, what)

    monkeypatch.setattr(FieldReader, "expect_keys", recording)
    for path in [*EXAMPLES, EVERY_KEY]:
        try:
            load_config(path)
        except ConfigError:
            pass  # every_key.yaml names files that do not exist; its keys were read all the same
    for path in PACKS:
        load_pack_file(path)
    return calls


def properties(document: dict[str, Any], pointer: str) -> frozenset[str]:
    place = at(document, pointer)
    assert place.get("additionalProperties") is False, f"{pointer}: an editor must flag unknown keys"
    return frozenset(place["properties"])


def test_each_section_a_reader_accepts_has_exactly_its_keys_in_the_schema(recorded: list[tuple[str, str, frozenset[str]]]) -> None:
    config, pack = schema("config"), schema("pack")
    for site, what, keys in recorded:
        if site.startswith(NOT_IN_A_SCHEMA):
            continue
        section = "token type" if what.startswith("token type ") else what
        places = [(config, CONFIG_PLACES.get(section, ())), (pack, PACK_PLACES.get(section, ()))]
        assert any(pointers for _, pointers in places), f"{site}: section {what!r} has no place in a schema"
        for document, pointers in places:  # a section read in both files (headers) is in both schemas
            found = [properties(document, pointer) for pointer in pointers]
            assert not pointers or keys in found, f"{site}: {what} accepts {sorted(keys)}; the schema has {[sorted(f) for f in found]}"


def test_every_reader_section_was_reached(recorded: list[tuple[str, str, frozenset[str]]]) -> None:
    sites = set()
    for source in sorted((ROOT / "proxy").rglob("*.py")):
        relative = str(source.relative_to(ROOT))
        for number, line in enumerate(source.read_text().splitlines(), 1):
            if ".expect_keys(" in line and not relative.startswith(NOT_IN_A_SCHEMA):
                sites.add(f"{relative}:{number}")
    assert sites - {site for site, _, _ in recorded} == set()


def test_the_named_choices_are_the_readers_own() -> None:
    config = schema("config")
    upstream = config["$defs"]["upstream"]["properties"]
    assert upstream["token_source"]["properties"]["type"]["enum"] == list(SOURCE_TYPES)
    assert upstream["credential"]["properties"]["type"]["enum"] == list(CREDENTIAL_TYPES)
    assert upstream["transport"]["enum"] == list(TRANSPORTS)
    assert upstream["token_header"]["enum"] == list(TOKEN_HEADERS)
    assert [s["properties"]["type"]["const"] for s in config["properties"]["store"]["oneOf"]] == list(STORE_KINDS)
    assert config["$defs"]["jwtSource"]["properties"]["algorithms"]["items"]["enum"] == list(ALGORITHM_FAMILIES)
    issuer_source = config["$defs"]["issuerSource"]["properties"]
    assert issuer_source["grants"]["propertyNames"]["enum"] == list(MAPPED_GRANTS)
    assert issuer_source["service_accounts"]["propertyNames"]["enum"] == list(SCOPES)


def undescribed(document: dict[str, Any], node: Any, path: str) -> Iterator[str]:
    """Properties an editor would show without a word of explanation (the insides of if/then excepted)."""
    if isinstance(node, dict):
        for key, spec in node.get("properties", {}).items():
            described = spec.get("description") or ("$ref" in spec and at(document, spec["$ref"][1:]).get("description"))
            if not described:
                yield f"{path}/properties/{key}"
        for key, child in node.items():
            if key != "if":
                yield from undescribed(document, child, f"{path}/{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from undescribed(document, child, f"{path}/{index}")


@pytest.mark.parametrize("name", SCHEMAS)
def test_every_key_says_what_it_is_for(name: str) -> None:
    document = schema(name)
    assert list(undescribed(document, document, "")) == []
