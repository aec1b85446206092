"""``labgate test``: run the policy test cases kept beside the packs.

Each case is decided exactly as ``labgate explain`` decides a request (through
:func:`~proxy.policy.offline.decide_offline`) and compared with what the case
expects.  A pack is also held to its own rules: every rule it writes (each
route, endpoint prefix and deny rule, its query rule, its client IP allowlist,
its demand for the token's own endpoint list) must be the rule that decided at
least one case, or the run reports it as uncovered.  A rule no case reaches is
a rule nobody has checked does what its comment says.

Nothing here prints: loading raises :class:`~proxy.yamlsource.ConfigError`
with every problem, running returns results, and the CLI formats them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.errors import LabgateError
from proxy.policy.compile import CompiledPack, compile_pack
from proxy.policy.decide import Decision
from proxy.policy.load import load_pack_file
from proxy.policy.model import RouteTemplate
from proxy.policy.offline import decide_offline
from proxy.policy.testcases import TESTS_SUFFIX, TestCase, TestFile, load_test_file
from proxy.reasons import Reason
from proxy.token_facts import TokenFacts
from proxy.wording import plural
from proxy.yamlsource import (
    ConfigError,
    LocatedDict,
    LocatedList,
    Problem,
    line_of,
    load_yaml_file,
)


class MissingPath(LabgateError):
    """A PATH given to ``labgate test`` that is neither a file nor a folder."""

    reason = Reason.CONFIG_PROBLEM


@dataclass(frozen=True)
class PackUnderTest:
    """A pack, every rule it can name (with the line it is written on), and its test files."""

    pack: CompiledPack
    rule_lines: Mapping[str, int]
    tests: tuple[TestFile, ...]


@dataclass(frozen=True)
class CaseResult:
    """One case and the decision it got; ``mismatches`` is empty when it passed."""

    case: TestCase
    decision: Decision
    mismatches: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.mismatches


@dataclass(frozen=True)
class UncoveredRule:
    """A rule of a pack that decided no case."""

    file: str
    line: int
    rule: str


@dataclass(frozen=True)
class PackResult:
    """Everything one pack's cases showed."""

    pack: str
    file: str
    rules: int
    results: tuple[CaseResult, ...]
    uncovered: tuple[UncoveredRule, ...]

    @property
    def failures(self) -> tuple[CaseResult, ...]:
        return tuple(r for r in self.results if not r.passed)


def find_files(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """Pack files and test files named by ``paths`` (files or folders), each once, in order.

    A folder gives its ``*.yaml`` packs and ``*.tests.yaml`` test files; a pack
    file brings the test file beside it, a test file the pack beside it.
    """
    packs: dict[Path, Path] = {}  # resolved (each file once) -> as named (for messages)
    tests: dict[Path, Path] = {}
    for path in paths:
        if path.is_dir():
            for child in sorted(path.glob("*.yaml")):
                (tests if child.name.endswith(TESTS_SUFFIX) else packs).setdefault(child.resolve(), child)
        elif path.is_file():
            if path.name.endswith(TESTS_SUFFIX):
                tests.setdefault(path.resolve(), path)
                sibling = path.with_name(path.name[: -len(TESTS_SUFFIX)] + ".yaml")
            else:
                packs.setdefault(path.resolve(), path)
                sibling = path.with_name(path.name.removesuffix(".yaml") + TESTS_SUFFIX)
            if sibling.is_file():
                (tests if sibling.name.endswith(TESTS_SUFFIX) else packs).setdefault(sibling.resolve(), sibling)
        else:
            raise MissingPath(f"{path}: no such file or folder")
    return list(packs.values()), list(tests.values())


def load_suite(paths: Sequence[Path]) -> tuple[PackUnderTest, ...]:
    """Load the packs and test files ``paths`` name; ConfigError lists every problem in every file."""
    pack_files, test_files = find_files(paths)
    problems: list[Problem] = []
    packs: dict[str, tuple[CompiledPack, dict[str, int]]] = {}
    for file in pack_files:
        try:
            compiled = compile_pack(load_pack_file(file))
            document = load_yaml_file(file)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if compiled.name in packs:
            first = packs[compiled.name][0].pack.file
            problems.append(Problem(str(file), line_of(document, "pack"), f"pack {compiled.name!r} is also defined in {first}"))
            continue
        packs[compiled.name] = (compiled, rule_lines(compiled, document))
    tests: dict[str, list[TestFile]] = {}
    for file in test_files:
        try:
            loaded = load_test_file(file, {name: entry[0] for name, entry in packs.items()})
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        tests.setdefault(loaded.pack, []).append(loaded)
    if problems:
        raise ConfigError(problems)
    return tuple(PackUnderTest(compiled, lines, tuple(tests.get(name, ()))) for name, (compiled, lines) in packs.items())


def rule_lines(pack: CompiledPack, document: Any) -> dict[str, int]:
    """Every rule id a decision of ``pack`` can name for a rule the pack writes, with its line.

    The ids are built exactly as :func:`~proxy.policy.compile.compile_token_type`
    builds them; the lines come from the pack's YAML.
    """
    types_section = document.get("token_types") if isinstance(document, LocatedDict) else None
    lines: dict[str, int] = {}
    for name, compiled in pack.token_types.items():
        spec = compiled.spec
        body = types_section.get(name) if isinstance(types_section, LocatedDict) else None
        for key, routes in (("routes", spec.routes), ("deny", spec.deny)):
            written = _item_lines(body, key, lambda text: RouteTemplate.parse(text, allow_any_method=True).text)
            for route in routes:
                lines[compiled.rule_id(f"{key}/{route.text}")] = written.get(route.text, line_of(body, key))
        written = _item_lines(body, "path_prefixes", lambda text: text.rstrip("/") or "/")
        for prefix in spec.path_prefixes:
            lines[compiled.rule_id(f"path_prefixes/{prefix}")] = written.get(prefix, line_of(body, "path_prefixes"))
        if spec.query is not None:
            lines[compiled.rule_id("query")] = line_of(body, "query")
        written = _item_lines(body, "routes", lambda text: RouteTemplate.parse(text).text)
        for route, _rule in spec.route_queries:
            lines[compiled.rule_id(f"query/{route.text}")] = written.get(route.text, line_of(body, "routes"))
        if spec.client_ips is not None:
            lines[compiled.rule_id("client_ips")] = line_of(body, "client_ips")
        if spec.requires_token_prefixes:
            lines[compiled.rule_id("token_path_prefixes")] = line_of(body, "requires_token_prefixes")
    return lines


def _item_lines(body: Any, key: str, canonical: Callable[[str], str]) -> dict[str, int]:
    """The line of each item of ``body[key]``, by the item's canonical text."""
    items = body.get(key) if isinstance(body, LocatedDict) else None
    if not isinstance(items, LocatedList):
        return {}
    found: dict[str, int] = {}
    for index, item in enumerate(items):
        if isinstance(item, LocatedDict):
            item = item.get("route")  # a route with its own query rule: {route: ..., query: ...}
        if isinstance(item, str):
            try:
                found.setdefault(canonical(item), line_of(items, index))
            except ValueError:
                continue
    return found


def run_case(case: TestCase, pack: CompiledPack) -> CaseResult:
    """Decide the case's request as ``labgate explain`` would and compare."""
    token = TokenFacts(
        token_type=case.token_type,
        token_hash="policy-test",
        path_prefixes=case.token_path_prefixes,
        client_ips=case.token_client_ips,
    )
    decision = decide_offline(case.method, case.target, case.client_ip, token, pack)
    return CaseResult(case, decision, _mismatches(case, decision))


def _mismatches(case: TestCase, decision: Decision) -> tuple[str, ...]:
    expect = case.expect
    found: list[str] = []
    if _enforced_allow(decision) != expect.allowed:
        found.append("decision")
    if expect.reason is not None and decision.reason is not expect.reason:
        found.append("reason")
    if decision.rule != expect.rule:
        found.append("rule")
    if expect.shadow is not None and decision.shadow != expect.shadow:
        found.append("shadow")
    return tuple(found)


def _enforced_allow(decision: Decision) -> bool:
    """The pack's verdict: a shadow-mode type's would-be denial is a denial."""
    return decision.allowed and not decision.shadow


def run_pack(under_test: PackUnderTest) -> PackResult:
    pack = under_test.pack
    results = tuple(run_case(case, pack) for test_file in under_test.tests for case in test_file.cases)
    named = {result.decision.rule for result in results}
    uncovered = tuple(
        UncoveredRule(pack.pack.file, line, rule)
        for rule, line in sorted(under_test.rule_lines.items(), key=lambda item: (item[1], item[0]))
        if rule not in named
    )
    return PackResult(pack.name, pack.pack.file, len(under_test.rule_lines), results, uncovered)


def run_suite(suite: Iterable[PackUnderTest]) -> tuple[PackResult, ...]:
    return tuple(run_pack(under_test) for under_test in suite)


def describe_failure(result: CaseResult) -> str:
    """``file:line: case 'name': expected ..., got ...``, with the decision's own detail."""
    case, decision = result.case, result.decision
    expect = case.expect
    wanted = _verdict(expect.allowed, expect.reason.code if expect.reason else None, expect.rule, expect.shadow)
    # Say whether the decision was shadowed when the case asks, or when it was (a surprise either way).
    shadow = decision.shadow if expect.shadow is not None or decision.shadow else None
    got = _verdict(_enforced_allow(decision), decision.reason.code, decision.rule, shadow)
    detail = f": {decision.detail}" if decision.detail else ""
    return f"{case.file}:{case.line}: case {case.name!r}: expected {wanted}, got {got}{detail}"


def _verdict(allowed: bool, reason: str | None, rule: str | None, shadow: bool | None) -> str:
    text = "allow" if allowed else "deny"
    if reason is not None:
        text += f" {reason}"
    text += f" (rule {rule})" if rule is not None else " (no rule)"
    if shadow is not None:
        text += " in shadow mode" if shadow else " enforced"
    return text


def report(results: Sequence[PackResult], *, allow_uncovered: bool = False) -> tuple[list[str], bool]:
    """The lines ``labgate test`` prints, and whether the run passed.

    Failures and uncovered rules come first, one ``file:line:`` line each, then
    one summary line per pack and a total.  Uncovered rules fail the run unless
    ``allow_uncovered`` (then they are warnings).
    """
    lines: list[str] = []
    for pack in results:
        lines.extend(describe_failure(failure) for failure in pack.failures)
        warning = "warning: " if allow_uncovered else ""
        lines.extend(f"{warning}{rule.file}:{rule.line}: rule {rule.rule!r} decided no case" for rule in pack.uncovered)
    for pack in results:
        covered = pack.rules - len(pack.uncovered)
        lines.append(
            f"{pack.file}: pack {pack.pack!r}: {plural(len(pack.results), 'case')}, {len(pack.failures)} failed; "
            f"{covered}/{pack.rules} rules covered"
        )
    cases = sum(len(pack.results) for pack in results)
    failed = sum(len(pack.failures) for pack in results)
    uncovered = sum(len(pack.uncovered) for pack in results)
    lines.append(
        f"{plural(len(results), 'pack')}, {plural(cases, 'case')}: {cases - failed} passed, {failed} failed; "
        f"{plural(uncovered, 'rule')} uncovered"
    )
    return lines, failed == 0 and (allow_uncovered or uncovered == 0)
