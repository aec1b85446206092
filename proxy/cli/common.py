"""What every ``labgate`` command group shares: exit codes, and reading the config file."""

from __future__ import annotations

import sys

from proxy.config import Config, load_config
from proxy.yamlsource import ConfigError

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_DENIED = 0, 1, 2, 3
CONFIG_HELP = "config file (YAML)"


def load(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None
