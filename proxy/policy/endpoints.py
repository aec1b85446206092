"""How a token's own endpoint entry opens paths: whole segments, or Commvault's "starting with".

A token type says which reading its tokens' endpoint lists get
(``token_prefix_match``):

* ``whole-segments`` (the default): ``/api/hosts`` opens ``/api/hosts`` and
  everything below it, never ``/api/hostsX``.
* ``starting-with``: Commvault's Custom scope.  Commvault's documentation
  ('Creating an access token for a service account') says: "if you enter
  /plans, you can execute all plan operation REST APIs starting with /plan".
  An entry ``/A/B/name`` opens a path whose leading segments are ``A``,
  ``B`` and whose next segment starts with the entry's stem: ``name`` less
  one trailing plural ``s`` (``plans`` -> ``plan``).  Everything below that
  segment is open too.  A path may carry one API version segment first
  (``V2``, ``V4``: ``/V2/Plan``, ``/V4/Plan/7``) unless the entry names its
  own version.  So ``/plans`` opens ``/Plan``, ``/Plans``, ``/PlanSummary``,
  ``/Plan/7/...`` and ``/V2/Plan``, and nothing else: not ``/ServerPlan``,
  ``/Client``, ``/V2/Client`` nor ``/Subclient/Plan``; ``/Client`` opens
  ``/ClientGroup`` too, as on the appliance.  The stem must match from a
  segment's first character, so an entry never opens a path on a different
  first word; ``/`` alone opens everything.

Both compare letters case-insensitively when the pack says paths are.  The
mock Commvault (:mod:`proxy.mocks.commvault`) reads entries the same way, and a
test holds the two to one table.
"""

from __future__ import annotations

import re

from proxy.policy.compile import fold_segment, prefix_matches, prefix_segments

WHOLE_SEGMENTS = "whole-segments"
STARTING_WITH = "starting-with"
MATCH_MODES = (WHOLE_SEGMENTS, STARTING_WITH)
_VERSION = re.compile(r"[Vv][0-9]{1,3}")


def entry_stem(segment: str) -> str:
    """The entry's last segment less one trailing plural ``s`` (never down to nothing)."""
    if len(segment) > 1 and segment[-1] in "sS":
        return segment[:-1]
    return segment


def starting_with(entry: str, segments: tuple[str, ...], case_insensitive: bool) -> bool:
    """Whether ``entry`` opens the path ``segments`` in Commvault's "starting with" reading."""
    wanted = prefix_segments(entry)
    if not wanted:
        return True
    candidates = [segments]
    if segments and _VERSION.fullmatch(segments[0]) and not _VERSION.fullmatch(wanted[0]):
        candidates.append(segments[1:])
    return any(_opens(wanted, path, case_insensitive) for path in candidates)


def _opens(wanted: tuple[str, ...], path: tuple[str, ...], case_insensitive: bool) -> bool:
    if len(path) < len(wanted):
        return False
    *leading, last = wanted

    def fold(segment: str) -> str:
        return fold_segment(segment, case_insensitive)

    if any(fold(w) != fold(s) for w, s in zip(leading, path)):
        return False
    return fold(path[len(leading)]).startswith(fold(entry_stem(last)))


def entry_opens(mode: str, entry: str, segments: tuple[str, ...], case_insensitive: bool) -> bool:
    """One endpoint entry of a token against a request path, in the type's reading."""
    if mode == STARTING_WITH:
        return starting_with(entry, segments, case_insensitive)
    return prefix_matches(entry, segments, case_insensitive)
