#!/usr/bin/env bash
# Generates the Python code of every .proto under src/skuflow (today: the auth fast path) with grpcio-tools, in
# place, beside its .proto. The generated files are checked in; tests/unit/test_protos.py fails when they differ.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m skuflow.auth.generate src
