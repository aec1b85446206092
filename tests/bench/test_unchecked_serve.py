"""The benchmark's unchecked labgate takes out exactly the checks it names, or refuses to start."""

from __future__ import annotations

import sys

import pytest

from bench import unchecked_serve


def test_every_method_it_replaces_is_one_labgate_has() -> None:
    for owner, name in unchecked_serve.replacements():
        assert callable(getattr(owner, name, None)), f"{owner.__name__}.{name}"


def test_a_method_labgate_no_longer_has_stops_it_before_anything_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    class Renamed:
        def kept(self) -> None: ...

    def stand_in(*args: object) -> None: ...

    monkeypatch.setattr(unchecked_serve, "replacements", lambda: {(Renamed, "kept"): stand_in, (Renamed, "gone"): stand_in})
    with pytest.raises(SystemExit, match=r"no Renamed\.gone"):
        unchecked_serve.take_checks_out()
    assert Renamed.kept is not stand_in  # nothing was replaced


@pytest.mark.parametrize("argv", [[], ["serve", "--config", "labgate.yaml"]])
def test_without_the_separator_it_says_how_to_run_it(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["unchecked_serve", *argv])
    with pytest.raises(SystemExit, match="usage"):
        unchecked_serve.main()
