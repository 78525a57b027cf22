#!/usr/bin/env bash
# Runs the whole skuflow system on this machine (`skuflow up`), doing its own set-up (virtual environment,
# install): every service, the in-process broker and SQLite under ./var, unless SKUFLOW_BROKER_URL says
# amqp://... Ctrl-C stops it. Arguments go to `skuflow up`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/venv.sh
ensure_venv
exec .venv/bin/skuflow up "$@"
