"""Noticing that the config or a pack it names changed, by polling ``stat``.

Polling needs no new dependency and no inotify watch limits, and it sees
what inotify misses: files on network mounts, and Kubernetes ConfigMaps, which
are swapped by renaming a symlinked folder.  A fingerprint records size,
modification time and inode of every watched file (``stat`` follows symlinks);
an editor or a ConfigMap that replaces a file by renaming changes the inode
even when size and time look the same.  A folder of packs contributes each
``*.yaml`` file in it (``*.tests.yaml`` excepted, as the loader skips them), so
adding or removing a pack is a change too; other files in the folder (editor
swap files) are not.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from proxy.config import Config

FileState = tuple[int, int, int] | None  # (mtime_ns, size, inode); None when missing or unreadable
Fingerprint = tuple[tuple[str, FileState], ...]


def watched_paths(config: Config) -> tuple[Path, ...]:
    """The config file and every ``policies`` entry (a pack file or a folder of packs)."""
    return (config.file.resolve(), *config.policy_paths)


def fingerprint(paths: Iterable[Path]) -> Fingerprint:
    """What ``stat`` says about every watched file now; blocking, so run it in a thread."""
    entries: list[tuple[str, FileState]] = []
    for path in paths:
        if path.is_dir():
            packs = sorted(p for p in path.glob("*.yaml") if not p.name.endswith(".tests.yaml"))
            entries.extend((str(p), _state(p)) for p in packs)
        else:
            entries.append((str(path), _state(path)))
    return tuple(entries)


def _state(path: Path) -> FileState:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_mtime_ns, status.st_size, status.st_ino)
