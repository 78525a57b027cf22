#!/usr/bin/env bash
# Runs every check skuflow has, doing its own set-up: the virtual environment, RabbitMQ, PostgreSQL, the AsyncAPI
# JSON Schema (npm), promtool, then lint, types, import boundaries and the tests (the broker-disrupting ones in a
# pass of their own). Extra arguments go to pytest in the first pass, e.g. `scripts/test.sh -k dlq`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/venv.sh
source scripts/lib/rabbitmq.sh
source scripts/lib/postgres.sh
source scripts/lib/npm.sh
source scripts/lib/prometheus.sh

ensure_venv dev,bench  # bench: FastStream, for `skuflow bench bus --against faststream`
ensure_rabbitmq
ensure_postgres
ensure_asyncapi_specs  # the AsyncAPI 3.0 JSON Schema that `skuflow asyncapi`'s document is checked against
ensure_promtool  # promtool check rules: deploy/prometheus/alerts.yml

say "lint (ruff), types (mypy), import boundaries (import-linter)"
.venv/bin/ruff check src tests
.venv/bin/ruff format --check src tests
.venv/bin/mypy
.venv/bin/lint-imports

run_pytest() {  # pytest's exit code 5 (no tests ran) is a failure here
    local status=0
    .venv/bin/python -m pytest "$@" || status=$?
    [ $status -ne 5 ] || die "pytest ran no tests ($*)"
    return $status
}

say "tests"
# Two workers (pytest-xdist; the machine has two cores, and most tests wait on sockets): about 10 minutes
# instead of 17. `-n 0` after the command runs them in one process.
run_pytest -m "not disruptive" -n 2 --durations=25 "$@"  # the slowest, so that the suite's 20 minutes stay watched
if [ $# -eq 0 ]; then
    say "tests that disrupt the broker, on their own"
    run_pytest -m disruptive
fi
