#!/usr/bin/env bash
# README "Quick start", first command: install labgate into .venv and run the lab
# (`labgate demo`): mock appliances on loopback and labgate in front of them on
# 127.0.0.1:8080, serving the shipped deploy/examples/lab.yaml (SQLite store).
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/venv.sh
make_venv ''
exec .venv/bin/labgate demo "$@"
