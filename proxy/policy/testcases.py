"""Policy test cases: ``*.tests.yaml`` files kept beside the packs they test.

A test file names its pack and lists cases; each case is a request made with a
token of one type and the decision the pack must reach::

    pack: simplivity
    cases:
      - name: emergency token cannot sort
        token_type: emergency
        request: GET /api/hosts?sort=name
        client_ip: 10.0.0.5                 # optional; without it the client is unknown
        token: {path_prefixes: [/Client], client_ips: ["10.0.0.1"]}  # optional narrowing
        expect: {decision: deny, reason: query_param_not_allowed, rule: simplivity/emergency/query}

Files are read as strictly as packs: every problem is reported as
``file:line: message``, unknown keys and unknown token types are refused, and a
file with any problem is refused whole (a case silently skipped is a case that
can never fail).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from proxy.ipaddrs import AddressSet, InvalidAddress, IPAddress, parse_ip
from proxy.policy.compile import CompiledPack
from proxy.policy.load import read_address_set
from proxy.reasons import Reason
from proxy.token_narrowing import MalformedNarrowing, path_prefixes_claim
from proxy.yamlsource import (
    FieldReader,
    LocatedDict,
    LocatedList,
    Problems,
    line_of,
    load_yaml_file,
)

TESTS_SUFFIX = ".tests.yaml"
FILE_KEYS = ("pack", "description", "cases")
CASE_KEYS = ("name", "token_type", "request", "client_ip", "token", "expect")
TOKEN_KEYS = ("path_prefixes", "client_ips")
EXPECT_KEYS = ("decision", "reason", "rule", "shadow")
_REASONS = {reason.code: reason for reason in Reason}


@dataclass(frozen=True)
class Expectation:
    """What a case must decide.

    ``allowed`` is the verdict the pack's rules reach: a shadow-mode type's
    would-be denial counts as a denial (``shadow`` then says whether the case
    also checks that it is only logged).  ``reason`` and ``shadow`` are only
    compared when the case gives them; ``rule`` always is (None: no rule
    decided, as for a request that breaks the path contract).
    """

    allowed: bool
    rule: str | None
    reason: Reason | None = None
    shadow: bool | None = None


@dataclass(frozen=True)
class TestCase:
    """One request, the token that makes it, and the expected decision."""

    __test__ = False  # a value, not a pytest class

    file: str
    line: int
    name: str
    token_type: str
    method: str
    target: str
    client_ip: IPAddress | None
    token_path_prefixes: tuple[str, ...] | None
    token_client_ips: AddressSet | None
    expect: Expectation


@dataclass(frozen=True)
class TestFile:
    """The cases of one file, for one pack."""

    __test__ = False

    file: str
    pack: str
    cases: tuple[TestCase, ...]


def load_test_file(path: Path, packs: Mapping[str, CompiledPack]) -> TestFile:
    """Read one test file against the packs it may name; ConfigError lists every problem."""
    file = str(path)
    document = load_yaml_file(path)
    problems = Problems()
    reader = FieldReader(file, problems)
    if not isinstance(document, LocatedDict):
        problems.add(file, 1, "a policy test file must be a mapping with 'pack' and 'cases'")
        problems.raise_if_any()
    root = cast(LocatedDict, document)
    reader.expect_keys(root, FILE_KEYS, "a policy test file")
    reader.string(root, "description")
    name = reader.string(root, "pack", required=True)
    pack = packs.get(name) if name else None
    if name and pack is None:
        known = ", ".join(sorted(packs)) or "none"
        reader.error(root, "pack", f"pack {name!r} is not among the packs loaded (known: {known})")
    cases: list[TestCase] = []
    items = reader.items(root, "cases", required=True)
    if items is not None and not items:
        reader.error(root, "cases", "'cases' is empty: a test file needs at least one case")
    seen: dict[str, int] = {}
    for index, body in enumerate(items or ()):
        case = _read_case(reader, items, index, body, pack)
        if case is None:
            continue
        if case.name in seen:
            reader.error(items, index, f"case name {case.name!r} is used twice (first at line {seen[case.name]})")
            continue
        seen[case.name] = case.line
        cases.append(case)
    problems.raise_if_any()
    return TestFile(file, name or "", tuple(cases))


def _read_case(
    reader: FieldReader, items: LocatedList | None, index: int, body: Any, pack: CompiledPack | None
) -> TestCase | None:
    line = line_of(items, index)
    if not isinstance(body, LocatedDict):
        reader.error(items, index, "a case must be a mapping with name, token_type, request and expect")
        return None
    reader.expect_keys(body, CASE_KEYS, "a case")
    name = reader.string(body, "name", required=True)
    token_type = reader.string(body, "token_type", required=True)
    if token_type and pack is not None and token_type not in pack.token_types:
        known = ", ".join(pack.token_types)
        reader.error(body, "token_type", f"token type {token_type!r} is not in pack {pack.name!r} (known: {known})")
    request = _read_request(reader, body)
    client_ip = _read_client_ip(reader, body)
    prefixes, client_ips = _read_token(reader, body)
    expect = _read_expectation(reader, body)
    if name is None or token_type is None or request is None or expect is None:
        return None
    method, target = request
    return TestCase(reader.file, line, name, token_type, method, target, client_ip, prefixes, client_ips, expect)


def _read_request(reader: FieldReader, body: LocatedDict) -> tuple[str, str] | None:
    """``METHOD /target``: the target exactly as the appliance would receive it."""
    text = reader.string(body, "request", required=True)
    if text is None:
        return None
    method, _, target = text.partition(" ")
    if not method or not target or method != method.strip() or not target.startswith("/"):
        reader.error(body, "request", f"request {text!r} must be 'METHOD /path?query', e.g. 'GET /api/hosts?limit=10'")
        return None
    return method, target


def _read_client_ip(reader: FieldReader, body: LocatedDict) -> IPAddress | None:
    text = reader.string(body, "client_ip")
    if text is None:
        return None
    try:
        return parse_ip(text)
    except InvalidAddress as exc:
        reader.error(body, "client_ip", f"client_ip: {exc}")
        return None


def _read_token(reader: FieldReader, body: LocatedDict) -> tuple[tuple[str, ...] | None, AddressSet | None]:
    """The token's own endpoint list and IP allowlist, read as a token source reads them."""
    section = reader.section(body, "token")
    if section is None:
        return None, None
    reader.expect_keys(section, TOKEN_KEYS, "token")
    prefixes = None
    if reader.items(section, "path_prefixes") is not None:
        try:
            prefixes = path_prefixes_claim(section, "path_prefixes")
        except MalformedNarrowing:
            reader.error(section, "path_prefixes", "token path_prefixes must be plain paths like /Client (no %, ?, #, '..' or '//')")
    return prefixes, read_address_set(reader, section, "client_ips")


def _read_expectation(reader: FieldReader, body: LocatedDict) -> Expectation | None:
    section = reader.section(body, "expect", required=True)
    if section is None:
        return None
    reader.expect_keys(section, EXPECT_KEYS, "expect")
    decision = reader.string(section, "decision", required=True)
    if decision is not None and decision not in ("allow", "deny"):
        reader.error(section, "decision", f"decision must be allow or deny, not {decision!r}")
    if "rule" not in section:
        reader.error(section, None, "missing required key 'rule' (the rule id that decides, or null)")
    rule = reader.string(section, "rule")
    reason = _read_reason(reader, section, decision)
    shadow = reader.boolean(section, "shadow", default=False) if "shadow" in section else None
    if decision not in ("allow", "deny") or ("rule" in section and section["rule"] is not None and rule is None):
        return None
    return Expectation(decision == "allow", rule, reason, shadow)


def _read_reason(reader: FieldReader, section: LocatedDict, decision: str | None) -> Reason | None:
    code = reader.string(section, "reason")
    if code is None:
        return None
    reason = _REASONS.get(code)
    if reason is None:
        reader.error(section, "reason", f"unknown reason {code!r} (see docs/concepts/request-decision.md)")
        return None
    if decision in ("allow", "deny") and (decision == "allow") != (reason is Reason.ALLOWED):
        reader.error(section, "reason", f"reason {code!r} contradicts decision {decision!r}")
    return reason
