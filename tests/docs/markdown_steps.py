"""Steps written in a docs page, in order: files to write and shell commands with their shown output.

A fenced block with ``title="path"`` is a file the reader writes; an ``sh`` block
holds commands (a trailing backslash continues a line), and the ``# ...`` lines
right after a command are the output the page shows for it, where ``…`` stands
for anything (a request id, a time).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_FENCE = re.compile(r"^```(\S*)(.*)$")
_TITLE = re.compile(r'title="([^"]+)"')


@dataclass(frozen=True)
class WriteFile:
    path: str
    text: str


@dataclass(frozen=True)
class Command:
    line: str
    shown: tuple[str, ...]  # the output the page shows; empty: none shown

    def output_matches(self, output: str) -> bool:
        lines = [line.rstrip() for line in output.strip("\n").splitlines()]
        if len(lines) != len(self.shown):
            return False
        return all(re.fullmatch(_pattern(shown), line) for shown, line in zip(self.shown, lines))


def _pattern(shown: str) -> str:
    return ".*".join(re.escape(part) for part in shown.split("…"))


def steps_of(page: Path) -> list[WriteFile | Command]:
    steps: list[WriteFile | Command] = []
    lines = page.read_text().splitlines()
    index = 0
    while index < len(lines):
        opened = _FENCE.match(lines[index])
        index += 1
        if not opened:
            continue
        body: list[str] = []
        while not lines[index].startswith("```"):
            body.append(lines[index])
            index += 1
        index += 1
        title = _TITLE.search(opened.group(2))
        if title:
            steps.append(WriteFile(title.group(1), "\n".join(body) + "\n"))
        elif opened.group(1) == "sh":
            steps.extend(_commands(body))
    return steps


def _commands(body: list[str]) -> list[Command]:
    commands: list[Command] = []
    pending = ""
    for line in body:
        if line.startswith("# ") and commands and not pending:
            last = commands[-1]
            commands[-1] = Command(last.line, last.shown + (line[2:],))
        elif line.endswith("\\"):
            pending += line[:-1] + " "
        elif line.strip():
            commands.append(Command(pending + line, ()))
            pending = ""
    return commands
