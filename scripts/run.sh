#!/usr/bin/env bash
# Runs skuflow, doing its own set-up (virtual environment, install). For now: a round trip of one event
# through the broker (`skuflow demo`), with the in-process broker unless SKUFLOW_BROKER_URL says amqp://...
# Arguments are passed to the command, e.g. `scripts/run.sh --sku SKU-9`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/venv.sh
ensure_venv
exec .venv/bin/skuflow demo "$@"
