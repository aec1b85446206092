#!/usr/bin/env bash
# README "Quick start", first command: install labgate into .venv and serve the
# shipped example config (deploy/examples/quickstart.yaml) on 127.0.0.1:8080.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/venv.sh
make_venv ''
exec .venv/bin/labgate serve --config deploy/examples/quickstart.yaml "$@"
