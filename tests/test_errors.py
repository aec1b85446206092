"""One error tree: every exception labgate defines descends from LabgateError and carries a reason code."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import proxy
from proxy.errors import LabgateError
from proxy.reasons import Reason


def labgate_exception_classes() -> list[type[BaseException]]:
    """Every exception class defined in labgate's own modules (the mock appliances are not labgate)."""
    found: list[type[BaseException]] = []
    for module_info in pkgutil.walk_packages(proxy.__path__, "proxy."):
        if module_info.name.startswith(("proxy.mocks", "proxy.cli.__main__", "proxy.docgen.__main__")):
            continue
        module = importlib.import_module(module_info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == module.__name__:
                found.append(cls)
    return found


def test_every_exception_labgate_defines_is_a_labgate_error() -> None:
    classes = labgate_exception_classes()
    assert len(classes) > 20  # the walk found the package's errors
    outside = [f"{c.__module__}.{c.__qualname__}" for c in classes if not issubclass(c, LabgateError)]
    assert outside == []


def test_every_labgate_error_carries_a_reason() -> None:
    for cls in labgate_exception_classes():
        assert isinstance(cls.reason, Reason), cls  # type: ignore[attr-defined]


def test_names_are_unique_so_a_reader_never_confuses_two_errors() -> None:
    names = [c.__qualname__ for c in labgate_exception_classes() if not c.__qualname__.startswith("_")]
    assert sorted(names) == sorted(set(names))
