"""Counts in messages: singular for one, plural otherwise."""

from proxy.wording import plural


def test_one_is_singular_and_other_counts_plural() -> None:
    assert plural(1, "upstream") == "1 upstream"
    assert plural(0, "rule") == "0 rules"
    assert plural(2, "pack") == "2 packs"
    assert plural(3, "entry", "entries") == "3 entries"
