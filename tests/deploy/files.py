"""Reading deploy/: paths, YAML documents, and the tools that check them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from proxy.config import Config, load_config
from proxy.workers import STOP_MARGIN_SECONDS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CONTAINER_CONFIG = DEPLOY / "examples" / "container.yaml"
# Where deploy/Dockerfile puts the repository inside the image.
IMAGE_ROOT = PurePosixPath("/opt/labgate")


def container_config() -> Config:
    return load_config(CONTAINER_CONFIG)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def image_path(repo_path: Path) -> PurePosixPath:
    """Where a repository file sits inside the image, which keeps the repository layout."""
    return IMAGE_ROOT / repo_path.relative_to(ROOT).as_posix()


def required_tool(name: str, package: str) -> str:
    """A checker the tests run; under CI its absence is a failure, elsewhere a clear skip."""
    path = shutil.which(name)
    if path is not None:
        return path
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(f"{name} is required in CI (Debian package {package}; bash .ci/run installs it)")
    pytest.skip(f"{name} is not installed (Debian package {package}; bash .ci/run installs it)")


def optional_tool(name: str) -> str:
    """A checker worth running where it exists (kubectl, systemd-analyze), not required anywhere."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed; the structural tests above still ran")
    return path


def stop_deadline(drain_seconds: float) -> float:
    """How long labgate may take to stop after SIGTERM: the drain, then (with --workers) closing."""
    return drain_seconds + STOP_MARGIN_SECONDS
